// kube-harness runs a throwaway Kubernetes control plane on loopback for the
// tests: etcd embedded in this process, the real kube-apiserver as a child.
//
//	kube-harness --dir DIR [--apiserver PATH] [--remove-dir]
//	   -> DIR/admin.kubeconfig, DIR/ca.crt, DIR/kube-apiserver.log
//	   -> stdout: "kube-harness: ready kubeconfig=DIR/admin.kubeconfig server=https://127.0.0.1:PORT"
//
// With --node [--images DIR]... it also runs a real node (node.go: root,
// containerd, kubelet, kube-proxy, scheduler, controller-manager, pods on
// 198.18.16.0/20) and checks on stopping that the host is as it found it.
// What follows describes the mode without --node.
//
// The ready line is printed only once /readyz answers ok. Everything stops
// (apiserver, etcd, the data in a temp dir) on SIGTERM, SIGINT or when stdin
// closes, so a test that drops its handle or dies leaves nothing behind; the
// apiserver also gets SIGKILL from the kernel if this process is killed.
//
// What a control plane without kubelet and controller-manager means here:
//   - Pods can be created directly and their status patched; nothing runs them.
//   - The ServiceAccount admission plugin is off: it would refuse pods whose
//     ServiceAccount does not exist, and the "default" ones are made by the
//     controller-manager, which is absent. TokenRequest (kubectl create token)
//     works for any ServiceAccount that exists.
//   - Deployments get no ReplicaSets, namespaces are never finalized after a
//     delete, nothing is garbage collected.
//
// Authentication: a static admin token (group system:masters) for the admin
// kubeconfig, and ServiceAccount tokens signed by a key generated per run.
// Authorization: RBAC only. TLS: a CA generated per run signs the serving
// certificate (127.0.0.1, ::1, localhost), so clients verify the server.
package main

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
)

const (
	// Bounds of every wait: a 2-core machine starts the apiserver in 5-20 s.
	etcdStartTimeout      = 60 * time.Second
	apiserverReadyTimeout = 180 * time.Second
	apiserverStopTimeout  = 15 * time.Second
	// The issuer ServiceAccount tokens carry; also their default audience.
	saIssuer = "https://kubernetes.default.svc.cluster.local"
)

func main() {
	log.SetFlags(0)
	log.SetPrefix("kube-harness: ")
	dir := flag.String("dir", "", "directory for the kubeconfig, CA and logs (created; required)")
	apiserver := flag.String("apiserver", "", "kube-apiserver binary (default: beside this binary)")
	removeDir := flag.Bool("remove-dir", false, "remove --dir when stopping (for callers that cannot, e.g. a process-wide test fixture)")
	node := flag.Bool("node", false, "also run a real node: containerd, kubelet, kube-proxy, scheduler, controller-manager (root; see node.go)")
	var images []string
	flag.Func("images", "with --node: a directory whose *.tar image archives are imported into containerd (repeatable)", func(s string) error {
		images = append(images, s)
		return nil
	})
	pause := flag.String("pause-image", "", "with --node: the sandbox image archive (default: ../images/pause.tar beside this binary)")
	lockWait := flag.Duration("lock-wait", 10*time.Minute, "with --node: how long to wait for another node on this machine to stop")
	flag.Parse()
	if *dir == "" {
		log.Fatal("--dir is required")
	}
	self, err := os.Executable()
	if err != nil {
		log.Fatal(err)
	}
	binDir := filepath.Dir(self)
	if *apiserver == "" {
		*apiserver = filepath.Join(binDir, "kube-apiserver")
	}
	if *node {
		if *pause == "" {
			*pause = filepath.Join(binDir, "..", "images", "pause.tar")
		}
		err = runNode(*dir, nodeOptions{
			binDir:    binDir,
			apiserver: *apiserver,
			images:    images,
			pause:     *pause,
			lockWait:  *lockWait,
		})
	} else if len(images) > 0 {
		err = errors.New("--images needs --node")
	} else {
		err = run(*dir, *apiserver)
	}
	if *removeDir {
		_ = os.RemoveAll(*dir)
	}
	if err != nil {
		log.Fatal(err)
	}
}

func run(dir, apiserverBin string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	dir, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	data, err := os.MkdirTemp("", "kube-harness-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(data)

	// Stop on a signal or when whoever started us closes our stdin.
	ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer cancel()
	go func() {
		_, _ = io.Copy(io.Discard, os.Stdin)
		cancel()
	}()

	etcd, etcdURL, err := startEtcd(filepath.Join(data, "etcd"))
	if err != nil {
		return fmt.Errorf("etcd: %w", err)
	}
	defer etcd.Close()

	pki := filepath.Join(dir, "pki")
	creds, err := writePKI(pki, loopbackSANs())
	if err != nil {
		return fmt.Errorf("certificates: %w", err)
	}
	port, err := freePort()
	if err != nil {
		return err
	}
	server := fmt.Sprintf("https://127.0.0.1:%d", port)

	logPath := filepath.Join(dir, "kube-apiserver.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		return err
	}
	defer logFile.Close()
	cmd := exec.Command(apiserverBin,
		"--etcd-servers="+etcdURL,
		"--bind-address=127.0.0.1",
		"--advertise-address=127.0.0.1",
		fmt.Sprintf("--secure-port=%d", port),
		"--cert-dir="+filepath.Join(data, "certs"),
		"--tls-cert-file="+creds.servingCert,
		"--tls-private-key-file="+creds.servingKey,
		"--token-auth-file="+creds.tokenFile,
		"--authorization-mode=RBAC",
		"--service-account-issuer="+saIssuer,
		"--service-account-key-file="+creds.saKey,
		"--service-account-signing-key-file="+creds.saKey,
		// Only allocates ClusterIPs for Service objects; nothing routes them.
		// The benchmarking range, as on the node, never a private one.
		"--service-cluster-ip-range=198.19.255.0/24",
		// The kubernetes Service's endpoint would be a loopback address,
		// which Endpoints refuse.
		"--endpoint-reconciler-type=none",
		"--disable-admission-plugins=ServiceAccount",
		"--allow-privileged=true",
		"--profiling=false",
		"--v=1",
	)
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", apiserverBin, err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer stopApiserver(cmd, exited)

	if err := waitReady(ctx, server, creds, exited); err != nil {
		return fmt.Errorf("kube-apiserver: %w (log: %s)\n%s", err, logPath, tail(logPath, 30))
	}
	kubeconfig := filepath.Join(dir, "admin.kubeconfig")
	if err := writeKubeconfig(kubeconfig, server, creds); err != nil {
		return err
	}
	fmt.Printf("kube-harness: ready kubeconfig=%s server=%s\n", kubeconfig, server)

	select {
	case <-ctx.Done():
		return nil
	case err := <-exited:
		exited <- err
		return fmt.Errorf("kube-apiserver exited: %v (log: %s)\n%s", err, logPath, tail(logPath, 30))
	case err := <-etcd.Err():
		return fmt.Errorf("etcd: %w", err)
	}
}

func startEtcd(dir string) (*embed.Etcd, string, error) {
	clientPort, err := freePort()
	if err != nil {
		return nil, "", err
	}
	peerPort, err := freePort()
	if err != nil {
		return nil, "", err
	}
	client, _ := url.Parse(fmt.Sprintf("http://127.0.0.1:%d", clientPort))
	peer, _ := url.Parse(fmt.Sprintf("http://127.0.0.1:%d", peerPort))
	cfg := embed.NewConfig()
	cfg.Name = "harness"
	cfg.Dir = dir
	cfg.ListenClientUrls = []url.URL{*client}
	cfg.AdvertiseClientUrls = []url.URL{*client}
	cfg.ListenPeerUrls = []url.URL{*peer}
	cfg.AdvertisePeerUrls = []url.URL{*peer}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	cfg.LogLevel = "error"
	// Throwaway data: fsync buys nothing and costs seconds per test.
	cfg.UnsafeNoFsync = true
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return nil, "", err
	}
	select {
	case <-e.Server.ReadyNotify():
		return e, client.String(), nil
	case err := <-e.Err():
		e.Close()
		return nil, "", err
	case <-time.After(etcdStartTimeout):
		e.Close()
		return nil, "", errors.New("not ready in time")
	}
}

type credentials struct {
	caCert, servingCert, servingKey, saKey, tokenFile string
	caPEM                                             []byte
	adminToken                                        string
	// The CA's certificate and key, to sign more (node mode).
	ca    *x509.Certificate
	caKey *ecdsa.PrivateKey
}

// sans are the names a serving certificate carries.
type sans struct {
	ips []net.IP
	dns []string
}

// loopbackSANs: the API server as this mode serves it, on loopback only.
func loopbackSANs() sans {
	return sans{
		ips: []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP("::1")},
		dns: []string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc"},
	}
}

// writePKI makes a CA, a serving certificate it signs for names, the
// ServiceAccount signing key and the admin token file.
func writePKI(dir string, names sans) (*credentials, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	now := time.Now()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "kube-harness-ca"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return nil, err
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return nil, err
	}
	srvKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	srvTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: "kube-apiserver"},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses:  names.ips,
		DNSNames:     names.dns,
	}
	srvDER, err := x509.CreateCertificate(rand.Reader, srvTmpl, ca, &srvKey.PublicKey, caKey)
	if err != nil {
		return nil, err
	}
	// RSA: the key type every ServiceAccount token verifier accepts.
	saKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, err
	}
	tokenBytes := make([]byte, 24)
	if _, err := rand.Read(tokenBytes); err != nil {
		return nil, err
	}
	c := &credentials{
		caCert:      filepath.Join(dir, "ca.crt"),
		servingCert: filepath.Join(dir, "apiserver.crt"),
		servingKey:  filepath.Join(dir, "apiserver.key"),
		saKey:       filepath.Join(dir, "sa.key"),
		tokenFile:   filepath.Join(dir, "tokens.csv"),
		adminToken:  hex.EncodeToString(tokenBytes),
		ca:          ca,
		caKey:       caKey,
	}
	c.caPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})
	srvKeyDER, err := x509.MarshalECPrivateKey(srvKey)
	if err != nil {
		return nil, err
	}
	files := map[string][]byte{
		c.caCert:      c.caPEM,
		c.servingCert: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srvDER}),
		c.servingKey:  pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: srvKeyDER}),
		c.saKey:       pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(saKey)}),
		// token,user,uid,"group1,group2"
		c.tokenFile: []byte(c.adminToken + `,admin,admin,"system:masters"` + "\n"),
	}
	for path, content := range files {
		if err := os.WriteFile(path, content, 0o600); err != nil {
			return nil, err
		}
	}
	// Clients read the CA beside the kubeconfig.
	if err := os.WriteFile(filepath.Join(filepath.Dir(dir), "ca.crt"), c.caPEM, 0o644); err != nil {
		return nil, err
	}
	return c, nil
}

func waitReady(ctx context.Context, server string, c *credentials, exited chan error) error {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(c.caPEM)
	client := &http.Client{
		Timeout:   5 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}},
	}
	deadline := time.Now().Add(apiserverReadyTimeout)
	last := "no answer"
	for time.Now().Before(deadline) {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, server+"/readyz", nil)
		req.Header.Set("Authorization", "Bearer "+c.adminToken)
		resp, err := client.Do(req)
		if err == nil {
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			last = fmt.Sprintf("/readyz %d: %s", resp.StatusCode, strings.TrimSpace(string(body)))
		} else {
			last = err.Error()
		}
		select {
		case err := <-exited:
			exited <- err
			return fmt.Errorf("exited before ready: %v", err)
		case <-ctx.Done():
			return errors.New("stopped before ready")
		case <-time.After(250 * time.Millisecond):
		}
	}
	return fmt.Errorf("not ready after %s: %s", apiserverReadyTimeout, last)
}

func writeKubeconfig(path, server string, c *credentials) error {
	// JSON is YAML; no YAML library needed.
	content := fmt.Sprintf(`{
  "apiVersion": "v1",
  "kind": "Config",
  "clusters": [{"name": "harness", "cluster": {"server": %q, "certificate-authority-data": %q}}],
  "users": [{"name": "admin", "user": {"token": %q}}],
  "contexts": [{"name": "harness", "context": {"cluster": "harness", "user": "admin", "namespace": "default"}}],
  "current-context": "harness"
}
`, server, base64.StdEncoding.EncodeToString(c.caPEM), c.adminToken)
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(content), 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

func stopApiserver(cmd *exec.Cmd, exited chan error) {
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-exited:
	case <-time.After(apiserverStopTimeout):
		_ = cmd.Process.Kill()
		<-exited
	}
}

// freePort asks the kernel for an unused loopback port. Another process could
// take it before it is bound again; on a test machine that is rare enough.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func tail(path string, n int) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	var lines []string
	s := bufio.NewScanner(f)
	s.Buffer(make([]byte, 64*1024), 1024*1024)
	for s.Scan() {
		lines = append(lines, s.Text())
		if len(lines) > n {
			lines = lines[1:]
		}
	}
	return strings.Join(lines, "\n")
}
