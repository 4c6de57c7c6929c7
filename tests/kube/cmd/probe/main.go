// probe is the workload of the node tests, in an image FROM scratch:
//
//	probe serve :8080            answers GET / with "probe <hostname>"
//	probe check [--apiserver] [URL...]
//	    prints the pod's IPv4 routes (from /proc/net/route), then
//	    GETs https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT/version
//	    with the pod's ServiceAccount token and CA (what an in-cluster client
//	    such as kube-rs does), then each URL; prints one line per answer and
//	    exits 0 once all succeeded, 1 when they have not within a minute.
//
// Static (CGO_ENABLED=0) and without files of its own: it runs as uid 65532
// with a read-only root, as restricted Pod Security asks.
package main

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"time"
)

const saDir = "/var/run/secrets/kubernetes.io/serviceaccount"

func main() {
	if len(os.Args) >= 3 && os.Args[1] == "serve" {
		serve(os.Args[2])
		return
	}
	if len(os.Args) >= 2 && os.Args[1] == "check" {
		os.Exit(check(os.Args[2:]))
	}
	fmt.Fprintln(os.Stderr, "usage: probe serve ADDR | probe check [--apiserver] [URL...]")
	os.Exit(2)
}

func serve(addr string) {
	host, _ := os.Hostname()
	http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "probe %s\n", host)
	})
	fmt.Printf("probe: serving on %s\n", addr)
	if err := http.ListenAndServe(addr, nil); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

func check(args []string) int {
	type target struct {
		url    string
		client *http.Client
		token  string
	}
	var targets []target
	plain := &http.Client{Timeout: 5 * time.Second}
	for _, a := range args {
		if a != "--apiserver" {
			targets = append(targets, target{url: a, client: plain})
			continue
		}
		client, token, url, err := inCluster()
		if err != nil {
			fmt.Printf("probe: apiserver: %v\n", err)
			return 1
		}
		targets = append(targets, target{url: url + "/version", client: client, token: token})
	}
	printRoutes()
	deadline := time.Now().Add(time.Minute)
	for _, t := range targets {
		for {
			req, _ := http.NewRequest(http.MethodGet, t.url, nil)
			if t.token != "" {
				req.Header.Set("Authorization", "Bearer "+t.token)
			}
			resp, err := t.client.Do(req)
			if err == nil {
				body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
				resp.Body.Close()
				line := strings.Join(strings.Fields(string(body)), " ")
				fmt.Printf("probe: GET %s: %d %s\n", t.url, resp.StatusCode, line)
				if resp.StatusCode == http.StatusOK {
					break
				}
			} else {
				fmt.Printf("probe: GET %s: %v\n", t.url, err)
			}
			if time.Now().After(deadline) {
				return 1
			}
			time.Sleep(time.Second)
		}
	}
	return 0
}

// inCluster is the client an in-cluster Kubernetes library builds: the
// kubernetes Service from the environment, the mounted CA and token.
func inCluster() (*http.Client, string, string, error) {
	host, port := os.Getenv("KUBERNETES_SERVICE_HOST"), os.Getenv("KUBERNETES_SERVICE_PORT")
	if host == "" || port == "" {
		return nil, "", "", fmt.Errorf("KUBERNETES_SERVICE_HOST/PORT not set")
	}
	token, err := os.ReadFile(saDir + "/token")
	if err != nil {
		return nil, "", "", err
	}
	ca, err := os.ReadFile(saDir + "/ca.crt")
	if err != nil {
		return nil, "", "", err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(ca) {
		return nil, "", "", fmt.Errorf("no certificate in %s/ca.crt", saDir)
	}
	client := &http.Client{
		Timeout:   5 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}},
	}
	return client, strings.TrimSpace(string(token)), "https://" + net.JoinHostPort(host, port), nil
}

// printRoutes prints "probe: route DEST/BITS via GW dev IF" per IPv4 route.
func printRoutes() {
	b, err := os.ReadFile("/proc/net/route")
	if err != nil {
		fmt.Printf("probe: routes: %v\n", err)
		return
	}
	// Iface Destination Gateway Flags RefCnt Use Metric Mask ...; addresses
	// in hex, in the host's (little-endian) byte order.
	for _, line := range strings.Split(string(b), "\n")[1:] {
		f := strings.Fields(line)
		if len(f) < 8 {
			continue
		}
		dst, gw, mask := hexIP(f[1]), hexIP(f[2]), hexIP(f[7])
		bits, _ := net.IPMask(mask.To4()).Size()
		fmt.Printf("probe: route %s/%d via %s dev %s\n", dst, bits, gw, f[0])
	}
}

func hexIP(h string) net.IP {
	var v uint32
	fmt.Sscanf(h, "%x", &v)
	return net.IPv4(byte(v), byte(v>>8), byte(v>>16), byte(v>>24))
}
