// Node mode (--node): the control plane of main.go plus one real node, so
// pods run for real. Needs root; one node per machine (a lock file), since
// its address is the host's.
//
//	etcd (embedded) <- kube-apiserver 198.18.0.1:6443 (Node,RBAC; ServiceAccount,
//	                    PodSecurity, NodeRestriction admission)
//	                     ^  kubeconfigs with static tokens per component
//	   kube-controller-manager  kube-scheduler  kube-proxy (nftables)  kubelet 198.18.0.1:10250
//	                                                                       | CRI
//	                                            containerd (own root/state/socket) -> runc
//	                                                 | CNI: ptp + host-local, a veth and a /32 per pod
//	pods 198.18.16.0/20   Services 198.19.0.0/16 (`kubernetes` = 198.19.0.1 -> 198.18.0.1:6443)
//
// Addresses are in the benchmarking range only: 198.18.0.1/32 is added to lo
// for the run; pods get routes to 198.18.0.0/15 via the host and nothing else
// (no default route), and a guard table drops anything to or from that range
// that would leave through an interface other than lo or a pod's veth.
//
// The host before and after: a snapshot (hoststate.go) is taken before
// anything starts. Stopping undoes every change in reverse: control loops
// first (scheduler, controller-manager, kubelet), then every pod sandbox
// through CRI (so CNI releases its veth and address), kube-proxy and its
// --cleanup, containerd, then every process left under this one (it is a
// child subreaper, so orphaned shims and containers are its children) by
// PID, mounts under its folders, veths, the lo address, nftables rules,
// sysctls, cgroups and the host paths the components create. A second
// snapshot is compared with the first; any difference is printed and makes
// the harness exit non-zero. A killed harness's run is undone by the next
// (recover.go).
//
// Trade-offs: the kubelet and kube-proxy run with a PATH without iptables,
// so the kubelet makes none of its iptables chains (nothing here needs them)
// and kube-proxy's only rules are its own nftables tables, which --cleanup
// deletes. The kubelet trusts any client certificate of the run's CA
// (AlwaysAllow): only the API server has one. Components other than the
// kubelet authenticate with static tokens as the users the bootstrap RBAC
// policy already grants (the controller-manager as system:masters).
//
//	stdout: kube-harness: ready kubeconfig=DIR/admin.kubeconfig server=https://198.18.0.1:6443
//	          node=sluice-node node_ready_ms=N up_ms=N pod_cidr=... service_cidr=...
//	        ... on stop: host before: mounts=N links=N ..., host after: ...,
//	          leftover CATEGORY +|- LINE (each difference), teardown clean|left N changes down_ms=N
package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
)

const (
	nodeName = "sluice-node"
	// The node's (and the API server's) address, added to lo for the run: not
	// a loopback address, so the kubelet accepts it as its node IP and the
	// `kubernetes` Service can have it as endpoint.
	nodeIP       = "198.18.0.1"
	nodeAPIPort  = 6443
	benchRange   = "198.18.0.0/15"
	podCIDR      = "198.18.16.0/20"
	serviceCIDR  = "198.19.0.0/16"
	kubernetesIP = "198.19.0.1"
	// Must match an image imported before the kubelet starts: nothing can be
	// pulled here.
	pauseRef = "registry.k8s.io/pause:3.10"
	lockPath = "/run/sluice-node.lock"
	// The cgroup every pod's lives under, in each hierarchy (kubelet cgroupRoot).
	cgroupRoot = "sluice-node"
	guardTable = "sluice-node-guard"

	containerdStartTimeout = 30 * time.Second
	importTimeout          = 5 * time.Minute
	// The kubelet registers and is Ready in about a second here; CI headroom.
	nodeReadyTimeout = 120 * time.Second
	componentStop    = 20 * time.Second
	criTimeout       = 60 * time.Second
)

// Debian packages the node needs, by a command each installs (looked up in
// PATH, sbin folders included) or an absolute path.
var hostTools = []struct{ name, pkg string }{
	{"containerd", "containerd"},
	{"ctr", "containerd"},
	{"containerd-shim-runc-v2", "containerd"},
	{"runc", "runc"},
	{"/usr/lib/cni/ptp", "containernetworking-plugins"},
	{"/usr/lib/cni/host-local", "containernetworking-plugins"},
	{"/usr/lib/cni/loopback", "containernetworking-plugins"},
	{"nft", "nftables"},
	{"ip", "iproute2"},
}

var nodeBinaries = []string{"kubelet", "kube-scheduler", "kube-controller-manager", "kube-proxy"}

type nodeOptions struct {
	binDir, apiserver string
	images            []string
	pause             string
	lockWait          time.Duration
}

type node struct {
	dir, work, data string
	o               nodeOptions
	before          *hostState
	creds           *credentials
	etcd            *embed.Etcd
	procs           map[string]*proc
	order           []string // start order; stopped in reverse unless said otherwise
	exited          chan string
	api             *http.Client
	server          string
	tokens          map[string]string // component -> token
	// Host changes made, undone in reverse order.
	undo []undoStep
}

type undoStep struct {
	what string
	fn   func() error
}

func (n *node) did(what string, fn func() error) { n.undo = append(n.undo, undoStep{what, fn}) }

func runNode(dir string, o nodeOptions) (err error) {
	upStart := time.Now()
	if err := checkNodePrereqs(o); err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if dir, err = filepath.Abs(dir); err != nil {
		return err
	}
	ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer cancel()
	go func() {
		_, _ = io.Copy(io.Discard, os.Stdin)
		cancel()
	}()

	unlock, err := lockNode(ctx, o.lockWait)
	if err != nil {
		return err
	}
	defer unlock()
	if err := setSubreaper(); err != nil {
		return fmt.Errorf("prctl(PR_SET_CHILD_SUBREAPER): %w", err)
	}
	if err := recoverDeadRun(); err != nil {
		return err
	}
	before, err := snapshotHost()
	if err != nil {
		return fmt.Errorf("host snapshot: %w", err)
	}
	data, err := os.MkdirTemp("", "kube-harness-")
	if err != nil {
		return err
	}
	// Until the teardown below has run, a later harness can undo this run
	// from the journal if this process is killed.
	if err := writeJournal(journal{Pid: os.Getpid(), Dir: dir, Data: data, Before: before}); err != nil {
		return fmt.Errorf("journal %s: %w", journalPath, err)
	}
	n := &node{
		dir:    dir,
		work:   filepath.Join(dir, "node"),
		data:   data,
		o:      o,
		before: before,
		procs:  map[string]*proc{},
		exited: make(chan string, 16),
		server: fmt.Sprintf("https://%s:%d", nodeIP, nodeAPIPort),
		tokens: map[string]string{},
	}
	// Whatever happens from here (an error, a panic), the host is restored
	// and checked.
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("panic: %v", p)
		}
		downStart := time.Now()
		n.down()
		_ = os.RemoveAll(data)
		_ = os.Remove(journalPath)
		after, serr := snapshotHost()
		if serr != nil {
			err = errors.Join(err, fmt.Errorf("host snapshot after: %w", serr))
			return
		}
		fmt.Printf("kube-harness: host before: %s\n", before.summary())
		fmt.Printf("kube-harness: host after: %s\n", after.summary())
		diffs := before.diff(after)
		for _, d := range diffs {
			fmt.Printf("kube-harness: leftover %s\n", d)
		}
		if len(diffs) == 0 {
			fmt.Printf("kube-harness: teardown clean down_ms=%d\n", time.Since(downStart).Milliseconds())
		} else {
			fmt.Printf("kube-harness: teardown left %d changes down_ms=%d\n", len(diffs), time.Since(downStart).Milliseconds())
			err = errors.Join(err, fmt.Errorf("teardown left %d host changes (the 'leftover' lines on stdout)", len(diffs)))
		}
	}()

	readyAfter, err := n.up(ctx)
	if err != nil {
		return err
	}
	fmt.Printf("kube-harness: ready kubeconfig=%s server=%s node=%s node_ready_ms=%d up_ms=%d pod_cidr=%s service_cidr=%s\n",
		filepath.Join(dir, "admin.kubeconfig"), n.server, nodeName, readyAfter.Milliseconds(),
		time.Since(upStart).Milliseconds(), podCIDR, serviceCIDR)

	select {
	case <-ctx.Done():
		return nil
	case name := <-n.exited:
		p := n.procs[name]
		return fmt.Errorf("%s exited: %v (log: %s)\n%s", name, p.err, p.log, tail(p.log, 30))
	case err := <-n.etcd.Err():
		return fmt.Errorf("etcd: %w", err)
	}
}

func checkNodePrereqs(o nodeOptions) error {
	if os.Geteuid() != 0 {
		return errors.New("--node needs root: it runs containerd and the kubelet and changes the host's network")
	}
	// Root's PATH has the sbin folders; a test runner's may not.
	path := os.Getenv("PATH")
	for _, d := range []string{"/usr/local/sbin", "/usr/sbin", "/sbin", "/usr/bin", "/bin"} {
		if !strings.Contains(":"+path+":", ":"+d+":") {
			path += ":" + d
		}
	}
	os.Setenv("PATH", strings.TrimPrefix(path, ":"))
	var missing, pkgs []string
	seen := map[string]bool{}
	for _, t := range hostTools {
		if _, err := exec.LookPath(t.name); err != nil {
			missing = append(missing, t.name)
			if !seen[t.pkg] {
				seen[t.pkg] = true
				pkgs = append(pkgs, t.pkg)
			}
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("--node needs %s (Debian packages %s): run scripts/test, which installs them",
			strings.Join(missing, ", "), strings.Join(pkgs, " "))
	}
	for _, b := range append(append([]string{}, nodeBinaries...), "kube-apiserver") {
		if _, err := os.Stat(filepath.Join(o.binDir, b)); err != nil {
			return fmt.Errorf("%s is missing: run tests/kube/build.sh (scripts/test runs it)", filepath.Join(o.binDir, b))
		}
	}
	if _, err := os.Stat(o.pause); err != nil {
		return fmt.Errorf("the pause image %s is missing: run tests/kube/build.sh (scripts/test runs it)", o.pause)
	}
	fs, _ := os.ReadFile("/proc/filesystems")
	if !strings.Contains(string(fs), "\toverlay\n") {
		return errors.New("the kernel has no overlay filesystem, which containerd's overlayfs snapshotter needs")
	}
	return nil
}

// lockNode takes the machine-wide node lock (flock, released by the kernel
// if this process dies), waiting at most wait for another node to stop.
func lockNode(ctx context.Context, wait time.Duration) (func(), error) {
	f, err := os.OpenFile(lockPath, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, err
	}
	deadline := time.Now().Add(wait)
	announced := false
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			break
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			f.Close()
			return nil, fmt.Errorf("lock %s: %w", lockPath, err)
		}
		if !announced {
			holder, _ := os.ReadFile(lockPath)
			log.Printf("another node runs on this machine (%s: %s); waiting up to %s", lockPath, strings.TrimSpace(string(holder)), wait)
			announced = true
		}
		if time.Now().After(deadline) {
			f.Close()
			return nil, fmt.Errorf("another node still runs on this machine after %s (lock %s)", wait, lockPath)
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, errors.New("stopped while waiting for the node lock")
		case <-time.After(500 * time.Millisecond):
		}
	}
	_ = f.Truncate(0)
	_, _ = f.WriteAt([]byte(fmt.Sprintf("pid %d\n", os.Getpid())), 0)
	return func() {
		_ = f.Truncate(0)
		_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		f.Close()
	}, nil
}

// up starts everything and returns how long the node took to be Ready
// after the kubelet started.
func (n *node) up(ctx context.Context) (time.Duration, error) {
	for _, d := range []string{"pki", "node/containerd", "node/cni/net.d", "node/kubelet", "node/pod-logs"} {
		if err := os.MkdirAll(filepath.Join(n.dir, d), 0o755); err != nil {
			return 0, err
		}
	}
	if err := n.hostSetup(); err != nil {
		return 0, err
	}
	if err := n.writeNodePKI(); err != nil {
		return 0, fmt.Errorf("certificates: %w", err)
	}

	etcd, etcdURL, err := startEtcd(filepath.Join(n.data, "etcd"))
	if err != nil {
		return 0, fmt.Errorf("etcd: %w", err)
	}
	n.etcd = etcd
	c := n.creds
	if err := n.start("kube-apiserver", nil, n.o.apiserver,
		"--etcd-servers="+etcdURL,
		"--bind-address="+nodeIP,
		"--advertise-address="+nodeIP,
		fmt.Sprintf("--secure-port=%d", nodeAPIPort),
		"--cert-dir="+filepath.Join(n.data, "certs"),
		"--tls-cert-file="+c.servingCert,
		"--tls-private-key-file="+c.servingKey,
		"--client-ca-file="+c.caCert,
		"--token-auth-file="+c.tokenFile,
		"--authorization-mode=Node,RBAC",
		"--enable-admission-plugins=NodeRestriction",
		"--service-account-issuer="+saIssuer,
		"--service-account-key-file="+c.saKey,
		"--service-account-signing-key-file="+c.saKey,
		"--service-cluster-ip-range="+serviceCIDR,
		"--kubelet-client-certificate="+filepath.Join(n.dir, "pki/apiserver-kubelet-client.crt"),
		"--kubelet-client-key="+filepath.Join(n.dir, "pki/apiserver-kubelet-client.key"),
		"--kubelet-certificate-authority="+c.caCert,
		"--kubelet-preferred-address-types=InternalIP",
		"--allow-privileged=true",
		"--profiling=false",
		"--v=1",
	); err != nil {
		return 0, err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(c.caPEM)
	n.api = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	apiExited := make(chan error, 1)
	go func() {
		<-n.procs["kube-apiserver"].done
		apiExited <- n.procs["kube-apiserver"].err
	}()
	if err := waitReady(ctx, n.server, c, apiExited); err != nil {
		return 0, n.failure("kube-apiserver", err)
	}
	if err := writeKubeconfig(filepath.Join(n.dir, "admin.kubeconfig"), n.server, c); err != nil {
		return 0, err
	}
	kubeconfigs := map[string]string{}
	for _, comp := range []string{"kubelet", "kube-proxy", "kube-scheduler", "kube-controller-manager"} {
		path := filepath.Join(n.work, comp+".kubeconfig")
		if err := writeKubeconfig(path, n.server, &credentials{caPEM: c.caPEM, adminToken: n.tokens[comp]}); err != nil {
			return 0, err
		}
		kubeconfigs[comp] = path
	}

	if err := n.startContainerd(ctx); err != nil {
		return 0, err
	}
	if err := n.importImages(ctx); err != nil {
		return 0, err
	}
	if err := n.writeCNIConfig(); err != nil {
		return 0, err
	}

	if err := n.start("kube-controller-manager", nil, filepath.Join(n.o.binDir, "kube-controller-manager"),
		"--kubeconfig="+kubeconfigs["kube-controller-manager"],
		"--leader-elect=false",
		"--secure-port=0",
		// Published in every namespace as kube-root-ca.crt, which projected
		// ServiceAccount volumes mount as ca.crt.
		"--root-ca-file="+c.caCert,
		"--service-account-private-key-file="+c.saKey,
		"--use-service-account-credentials=false",
		"--controllers=*",
		"--v=1",
	); err != nil {
		return 0, err
	}
	if err := n.start("kube-scheduler", nil, filepath.Join(n.o.binDir, "kube-scheduler"),
		"--kubeconfig="+kubeconfigs["kube-scheduler"],
		"--leader-elect=false",
		"--secure-port=0",
		"--v=1",
	); err != nil {
		return 0, err
	}
	proxyConfig, err := n.writeKubeProxyConfig(kubeconfigs["kube-proxy"])
	if err != nil {
		return 0, err
	}
	if err := n.start("kube-proxy", n.proxyEnv(), filepath.Join(n.o.binDir, "kube-proxy"),
		"--config="+proxyConfig, "--v=1"); err != nil {
		return 0, err
	}
	kubeletConfig, err := n.writeKubeletConfig()
	if err != nil {
		return 0, err
	}
	kubeletStart := time.Now()
	if err := n.start("kubelet", kubeletEnv(), filepath.Join(n.o.binDir, "kubelet"),
		"--config="+kubeletConfig,
		"--kubeconfig="+kubeconfigs["kubelet"],
		"--root-dir="+filepath.Join(n.work, "kubelet"),
		"--cert-dir="+filepath.Join(n.work, "kubelet/pki"),
		"--hostname-override="+nodeName,
		"--node-ip="+nodeIP,
		// -999 by default; lowering it needs CAP_SYS_RESOURCE, which root lacks here.
		"--oom-score-adj=0",
		"--v=1",
	); err != nil {
		return 0, err
	}

	if err := n.waitFor(ctx, "node "+nodeName+" Ready", nodeReadyTimeout, "kubelet", n.nodeReady); err != nil {
		return 0, err
	}
	readyAfter := time.Since(kubeletStart)
	// What a test's first pod needs besides the node: the ServiceAccount the
	// controller-manager makes, and the `kubernetes` Service programmed.
	if err := n.waitFor(ctx, "ServiceAccount default/default", nodeReadyTimeout, "kube-controller-manager", func() (bool, string) {
		code, body, err := n.get("/api/v1/namespaces/default/serviceaccounts/default")
		if err != nil {
			return false, err.Error()
		}
		return code == 200, fmt.Sprintf("%d %s", code, body)
	}); err != nil {
		return 0, err
	}
	if err := n.waitFor(ctx, "kube-proxy to program the kubernetes Service", nodeReadyTimeout, "kube-proxy", func() (bool, string) {
		out, err := exec.Command("nft", "list", "table", "ip", "kube-proxy").CombinedOutput()
		if err != nil {
			return false, strings.TrimSpace(string(out))
		}
		return strings.Contains(string(out), kubernetesIP+" . tcp . 443"), "no " + kubernetesIP + " in table ip kube-proxy"
	}); err != nil {
		return 0, err
	}
	return readyAfter, nil
}

// hostSetup makes the host changes the node needs, each recorded for undo.
func (n *node) hostSetup() error {
	addrs, err := exec.Command("ip", "-o", "addr", "show", "dev", "lo").Output()
	if err != nil {
		return fmt.Errorf("ip addr show dev lo: %w", err)
	}
	if strings.Contains(string(addrs), " "+nodeIP+"/") {
		return fmt.Errorf("%s is already on lo: another node's, or one a killed harness left (remove it: ip addr del %s/32 dev lo)", nodeIP, nodeIP)
	}
	if err := run1("ip", "addr", "add", nodeIP+"/32", "dev", "lo"); err != nil {
		return err
	}
	n.did("remove "+nodeIP+" from lo", func() error { return run1("ip", "addr", "del", nodeIP+"/32", "dev", "lo") })

	// Pod to pod and pod to the node's address go through the host.
	if err := os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("1"), 0o644); err != nil {
		return err
	}

	// Nothing to or from the benchmarking range leaves through an interface
	// other than lo or a pod's veth (ptp names them veth*): a Service without
	// endpoints or a stray address cannot reach the default route.
	guard := fmt.Sprintf(`table inet %s {
	chain postrouting {
		type filter hook postrouting priority 0; policy accept;
		ip daddr %s oifname != "lo" oifname != "veth*" counter drop
		ip saddr %s oifname != "lo" oifname != "veth*" counter drop
	}
	chain forward {
		type filter hook forward priority 0; policy accept;
		ip daddr %s oifname != "lo" oifname != "veth*" counter drop
	}
}
`, guardTable, benchRange, benchRange, benchRange)
	if err := nftApply(guard); err != nil {
		return fmt.Errorf("guard table: %w", err)
	}
	n.did("delete table inet "+guardTable, func() error { return run1("nft", "delete", "table", "inet", guardTable) })

	// The kubelet requires its cgroupRoot to exist in every hierarchy.
	for _, h := range cgroupHierarchies() {
		dir := filepath.Join(h, cgroupRoot)
		if _, err := os.Stat(dir); err == nil {
			return fmt.Errorf("%s exists: a killed harness's leftover? (remove its empty cgroups with rmdir, deepest first)", dir)
		}
		if err := os.Mkdir(dir, 0o755); err != nil {
			return err
		}
		if filepath.Base(h) == "cpuset" {
			for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
				v, err := os.ReadFile(filepath.Join(h, f))
				if err == nil {
					_ = os.WriteFile(filepath.Join(dir, f), v, 0o644)
				}
			}
		}
	}
	n.did("remove the "+cgroupRoot+" cgroups", func() error { return removeCgroups(cgroupRoot) })
	return nil
}

// writeNodePKI: the control plane's PKI (main.go) with the node's names on
// the serving certificate, a serving certificate for the kubelet, a client
// certificate for the API server to reach it, and a token per component.
func (n *node) writeNodePKI() error {
	names := loopbackSANs()
	names.ips = append(names.ips, net.ParseIP(nodeIP), net.ParseIP(kubernetesIP))
	names.dns = append(names.dns, "kubernetes.default.svc.cluster.local")
	c, err := writePKI(filepath.Join(n.dir, "pki"), names)
	if err != nil {
		return err
	}
	n.creds = c
	pki := filepath.Join(n.dir, "pki")
	if err := signPair(c, filepath.Join(pki, "kubelet"), &x509.Certificate{
		Subject:     pkix.Name{CommonName: "system:node:" + nodeName, Organization: []string{"system:nodes"}},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses: []net.IP{net.ParseIP(nodeIP)},
		DNSNames:    []string{nodeName},
	}); err != nil {
		return err
	}
	if err := signPair(c, filepath.Join(pki, "apiserver-kubelet-client"), &x509.Certificate{
		Subject:     pkix.Name{CommonName: "kube-apiserver-kubelet-client", Organization: []string{"system:masters"}},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}); err != nil {
		return err
	}
	// token,user,uid,"groups": the users the bootstrap RBAC policy (and the
	// Node authorizer, for the kubelet) already grant what each needs; the
	// controller-manager runs every controller with its own credentials, so
	// it gets system:masters rather than a ServiceAccount per controller.
	users := map[string]string{
		"kubelet":                 `system:node:` + nodeName + `,kubelet,"system:nodes"`,
		"kube-proxy":              `system:kube-proxy,kube-proxy,""`,
		"kube-scheduler":          `system:kube-scheduler,kube-scheduler,""`,
		"kube-controller-manager": `system:kube-controller-manager,kube-controller-manager,"system:masters"`,
	}
	f, err := os.OpenFile(c.tokenFile, os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	defer f.Close()
	comps := make([]string, 0, len(users))
	for comp := range users {
		comps = append(comps, comp)
	}
	sort.Strings(comps)
	for _, comp := range comps {
		b := make([]byte, 24)
		if _, err := rand.Read(b); err != nil {
			return err
		}
		n.tokens[comp] = hex.EncodeToString(b)
		if _, err := fmt.Fprintf(f, "%s,%s\n", n.tokens[comp], users[comp]); err != nil {
			return err
		}
	}
	return f.Close()
}

// signPair writes base.crt and base.key: a fresh P-256 key and a
// certificate for tmpl signed by the run's CA.
func signPair(c *credentials, base string, tmpl *x509.Certificate) error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	serial, err := rand.Int(rand.Reader, big.NewInt(1<<62))
	if err != nil {
		return err
	}
	tmpl.SerialNumber = serial
	tmpl.NotBefore = time.Now().Add(-time.Hour)
	tmpl.NotAfter = time.Now().Add(24 * time.Hour)
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	der, err := x509.CreateCertificate(rand.Reader, tmpl, c.ca, &key.PublicKey, c.caKey)
	if err != nil {
		return err
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return err
	}
	if err := os.WriteFile(base+".crt", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		return err
	}
	return os.WriteFile(base+".key", pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600)
}

func (n *node) containerdSocket() string { return filepath.Join(n.work, "containerd/containerd.sock") }

func (n *node) startContainerd(ctx context.Context) error {
	cd := filepath.Join(n.work, "containerd")
	config := fmt.Sprintf(`version = 2
root = %q
state = %q
# Plugins that would write outside root and state (/opt/containerd) or that
# the node does not use.
disabled_plugins = [
  "io.containerd.internal.v1.opt",
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.zfs",
  "io.containerd.tracing.processor.v1.otlp",
]

[grpc]
  address = %q

# The tasks service needs this plugin loaded, though no pod uses it.
[plugins."io.containerd.runtime.v1.linux"]
  runtime_root = %q

[ttrpc]
  address = %q

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = %q
  disable_apparmor = true
  # Root without CAP_SYS_RESOURCE cannot lower a process's oom_score_adj.
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = %q
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = %q
    max_conf_num = 1
`, filepath.Join(cd, "root"), filepath.Join(cd, "state"), n.containerdSocket(), filepath.Join(cd, "runc-v1"), n.containerdSocket()+".ttrpc",
		pauseRef, filepath.Join(cd, "runc"), filepath.Join(n.work, "cni/net.d"))
	path := filepath.Join(cd, "config.toml")
	if err := os.WriteFile(path, []byte(config), 0o644); err != nil {
		return err
	}
	if err := n.start("containerd", nil, "containerd", "--config", path); err != nil {
		return err
	}
	return n.waitFor(ctx, "containerd to answer", containerdStartTimeout, "containerd", func() (bool, string) {
		out, err := n.ctr(ctx, 10*time.Second, "version")
		return err == nil, out
	})
}

func (n *node) ctr(ctx context.Context, timeout time.Duration, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	all := append([]string{"--address", n.containerdSocket(), "--namespace", "k8s.io"}, args...)
	out, err := exec.CommandContext(ctx, "ctr", all...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("ctr %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

// importImages loads the pause image and every *.tar of the --images
// folders into containerd's k8s.io namespace, where the kubelet finds them.
func (n *node) importImages(ctx context.Context) error {
	archives := []string{n.o.pause}
	for _, d := range n.o.images {
		found, err := filepath.Glob(filepath.Join(d, "*.tar"))
		if err != nil {
			return err
		}
		if len(found) == 0 {
			return fmt.Errorf("--images %s: no *.tar in it", d)
		}
		for _, f := range found {
			if abs, _ := filepath.Abs(f); abs != n.o.pause {
				archives = append(archives, f)
			}
		}
	}
	for _, a := range archives {
		if _, err := n.ctr(ctx, importTimeout, "images", "import", a); err != nil {
			return err
		}
	}
	out, err := n.ctr(ctx, 30*time.Second, "images", "list", "-q")
	if err != nil {
		return err
	}
	if !strings.Contains(out, pauseRef+"\n") {
		return fmt.Errorf("%s does not hold %s (images: %s)", n.o.pause, pauseRef, strings.Fields(out))
	}
	log.Printf("images: %s", strings.Join(strings.Fields(out), " "))
	return nil
}

// writeCNIConfig: a veth per pod with a /32 from podCIDR (ptp + host-local,
// state under the node's folder), routes to the benchmarking range only.
func (n *node) writeCNIConfig() error {
	conf := map[string]any{
		"cniVersion": "0.4.0",
		"name":       "sluice-node",
		"plugins": []any{map[string]any{
			"type":   "ptp",
			"ipMasq": false,
			"mtu":    1500,
			"ipam": map[string]any{
				"type":    "host-local",
				"ranges":  [][]map[string]string{{{"subnet": podCIDR}}},
				"routes":  []map[string]string{{"dst": benchRange}},
				"dataDir": filepath.Join(n.work, "cni/ipam"),
			},
		}},
	}
	b, err := json.MarshalIndent(conf, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(n.work, "cni/net.d/10-sluice-node.conflist"), b, 0o644)
}

func (n *node) writeKubeletConfig() (string, error) {
	resolv := filepath.Join(n.work, "resolv.conf")
	// The node has no cluster DNS, and the host's server may be at a private
	// address: pods get a resolv.conf with no nameserver (an option only,
	// since containerd copies the host's file when the kubelet's is empty).
	if err := os.WriteFile(resolv, []byte("options ndots:1\n"), 0o644); err != nil {
		return "", err
	}
	pki := filepath.Join(n.dir, "pki")
	config := fmt.Sprintf(`{
  "apiVersion": "kubelet.config.k8s.io/v1beta1",
  "kind": "KubeletConfiguration",
  "address": %q,
  "port": 10250,
  "readOnlyPort": 0,
  "healthzPort": 0,
  "tlsCertFile": %q,
  "tlsPrivateKeyFile": %q,
  "authentication": {"anonymous": {"enabled": false}, "webhook": {"enabled": false}, "x509": {"clientCAFile": %q}},
  "authorization": {"mode": "AlwaysAllow"},
  "containerRuntimeEndpoint": "unix://%s",
  "cgroupDriver": "cgroupfs",
  "cgroupRoot": "/%s",
  "failSwapOn": false,
  "failCgroupV1": false,
  "makeIPTablesUtilChains": false,
  "podLogsDir": %q,
  "resolvConf": %q,
  "evictionHard": {"memory.available": "100Mi", "nodefs.available": "1%%", "nodefs.inodesFree": "1%%", "imagefs.available": "1%%", "imagefs.inodesFree": "1%%"},
  "imageGCHighThresholdPercent": 100,
  "imageGCLowThresholdPercent": 99,
  "serializeImagePulls": false,
  "syncFrequency": "10s",
  "registerNode": true
}
`, nodeIP, filepath.Join(pki, "kubelet.crt"), filepath.Join(pki, "kubelet.key"), n.creds.caCert,
		n.containerdSocket(), cgroupRoot, filepath.Join(n.work, "pod-logs"), resolv)
	path := filepath.Join(n.work, "kubelet-config.json")
	return path, os.WriteFile(path, []byte(config), 0o644)
}

func (n *node) writeKubeProxyConfig(kubeconfig string) (string, error) {
	metrics, err := freePort()
	if err != nil {
		return "", err
	}
	// conntrack zeros: kube-proxy leaves the host's conntrack sysctls alone.
	config := fmt.Sprintf(`{
  "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
  "kind": "KubeProxyConfiguration",
  "mode": "nftables",
  "clientConnection": {"kubeconfig": %q},
  "hostnameOverride": %q,
  "bindAddress": %q,
  "healthzBindAddress": "",
  "metricsBindAddress": "127.0.0.1:%d",
  "clusterCIDR": %q,
  "detectLocalMode": "ClusterCIDR",
  "nodePortAddresses": [%q],
  "oomScoreAdj": 0,
  "conntrack": {"maxPerCore": 0, "min": 0, "tcpEstablishedTimeout": "0s", "tcpCloseWaitTimeout": "0s"}
}
`, kubeconfig, nodeName, nodeIP, metrics, podCIDR, nodeIP+"/32")
	path := filepath.Join(n.work, "kube-proxy-config.json")
	return path, os.WriteFile(path, []byte(config), 0o644)
}

// kubeletEnv: a PATH without /usr/sbin, so the kubelet finds no iptables
// and makes none of its iptables chains (the node needs none of them);
// mount, umount and nsenter are in /usr/bin.
func kubeletEnv() []string {
	return envWithPath("/usr/local/bin:/usr/bin:/bin")
}

// proxyEnv: likewise, plus nft, which kube-proxy's nftables mode runs.
func (n *node) proxyEnv() []string {
	bin := filepath.Join(n.work, "proxy-bin")
	_ = os.MkdirAll(bin, 0o755)
	if nft, err := exec.LookPath("nft"); err == nil {
		_ = os.Symlink(nft, filepath.Join(bin, "nft"))
	}
	return envWithPath(bin + ":/usr/local/bin:/usr/bin:/bin")
}

func envWithPath(path string) []string {
	env := []string{"PATH=" + path}
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "PATH=") {
			env = append(env, kv)
		}
	}
	return env
}

func (n *node) nodeReady() (bool, string) {
	code, body, err := n.get("/api/v1/nodes/" + nodeName)
	if err != nil {
		return false, err.Error()
	}
	if code != 200 {
		return false, fmt.Sprintf("GET node: %d", code)
	}
	var nd struct {
		Status struct {
			Conditions []struct{ Type, Status, Reason, Message string }
		}
	}
	if err := json.Unmarshal(body, &nd); err != nil {
		return false, err.Error()
	}
	for _, c := range nd.Status.Conditions {
		if c.Type == "Ready" {
			return c.Status == "True", fmt.Sprintf("Ready=%s %s: %s", c.Status, c.Reason, c.Message)
		}
	}
	return false, "no Ready condition yet"
}

func (n *node) get(path string) (int, []byte, error) {
	req, _ := http.NewRequest(http.MethodGet, n.server+path, nil)
	req.Header.Set("Authorization", "Bearer "+n.creds.adminToken)
	resp, err := n.api.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return resp.StatusCode, body, err
}

// waitFor polls cond every 250 ms for at most timeout; on time-out or when
// a component exits, the error carries the state last seen and the log
// tail of the component that should have made cond true.
func (n *node) waitFor(ctx context.Context, what string, timeout time.Duration, comp string, cond func() (bool, string)) error {
	deadline := time.Now().Add(timeout)
	last := ""
	for {
		ok, state := cond()
		if ok {
			return nil
		}
		last = state
		if time.Now().After(deadline) {
			return n.failure(comp, fmt.Errorf("waited %s for %s: %s", timeout, what, last))
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("stopped while waiting for %s", what)
		case name := <-n.exited:
			n.exited <- name
			return n.failure(name, fmt.Errorf("%s exited while waiting for %s: %v", name, what, n.procs[name].err))
		case <-time.After(250 * time.Millisecond):
		}
	}
}

func (n *node) failure(comp string, err error) error {
	p, ok := n.procs[comp]
	if !ok {
		return err
	}
	return fmt.Errorf("%w\n--- %s (last 40 lines)\n%s", err, p.log, tail(p.log, 40))
}

// start runs a component with its output in DIR/NAME.log; it is killed by
// the kernel if the harness dies. env nil: the harness's own.
func (n *node) start(name string, env []string, bin string, args ...string) error {
	logPath := filepath.Join(n.dir, name+".log")
	p, err := startProc(name, logPath, env, bin, args...)
	if err != nil {
		return err
	}
	n.procs[name] = p
	n.order = append(n.order, name)
	go func() {
		<-p.done
		if !p.stopping.Load() {
			n.exited <- name
		}
	}()
	return nil
}

// down undoes up in reverse, each step bounded; it never stops halfway.
func (n *node) down() {
	// Control loops that would restart what the next steps remove.
	for _, name := range []string{"kube-scheduler", "kube-controller-manager", "kubelet"} {
		n.stopProc(name)
	}
	// Every pod: CRI stops its containers and calls CNI DEL (veth, address).
	if p := n.procs["containerd"]; p != nil && !p.exitedNow() {
		if err := removeSandboxes(n.containerdSocket(), criTimeout); err != nil {
			log.Printf("teardown: pod sandboxes: %v", err)
		}
	}
	n.stopProc("kube-proxy")
	if p := n.procs["kube-proxy"]; p != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		cmd := exec.CommandContext(ctx, filepath.Join(n.o.binDir, "kube-proxy"), "--cleanup",
			"--config="+filepath.Join(n.work, "kube-proxy-config.json"))
		cmd.Env = n.proxyEnv()
		if out, err := cmd.CombinedOutput(); err != nil {
			log.Printf("teardown: kube-proxy --cleanup: %v: %s", err, tailString(string(out), 10))
		}
		cancel()
	}
	n.stopProc("containerd")
	// Shims and anything they left: this process is their subreaper.
	keep := map[int]bool{}
	if p := n.procs["kube-apiserver"]; p != nil && !p.exitedNow() {
		keep[p.cmd.Process.Pid] = true
	}
	if killed := killDescendants(10*time.Second, keep); killed > 0 {
		log.Printf("teardown: killed %d leftover processes (shims, containers) by PID", killed)
	}
	n.stopProc("kube-apiserver")
	if n.etcd != nil {
		n.etcd.Close()
	}
	for name := range n.procs {
		n.stopProc(name)
	}
	killDescendants(5*time.Second, nil)

	// Host state, most specific first.
	if err := unmountNew(n.before, mountPrefixes(n.dir)); err != nil {
		log.Printf("teardown: unmount: %v", err)
	}
	if err := removeNewVeths(n.before); err != nil {
		log.Printf("teardown: veths: %v", err)
	}
	for i := len(n.undo) - 1; i >= 0; i-- {
		if err := n.undo[i].fn(); err != nil {
			log.Printf("teardown: %s: %v", n.undo[i].what, err)
		}
	}
	n.undo = nil
	restoreHost(n.before, n.dir, "teardown")
}

// Where the node's mounts are: its folder, and the places containerd and
// the kubelet use whatever they are told.
func mountPrefixes(dir string) []string {
	return []string{dir, "/run/containerd", "/var/lib/kubelet", "/run/netns", "/var/run/netns"}
}

// restoreHost undoes, generically, what the node's components change:
// nftables, sysctls, host paths.
func restoreHost(before *hostState, dir, what string) {
	if err := nftRestore(before); err != nil {
		log.Printf("%s: nftables: %v", what, err)
	}
	if err := restoreSysctls(before); err != nil {
		log.Printf("%s: sysctls: %v", what, err)
	}
	if err := removeNewPaths(before, dir); err != nil {
		log.Printf("%s: paths: %v", what, err)
	}
}

func (n *node) stopProc(name string) {
	if p := n.procs[name]; p != nil {
		p.stop(componentStop)
	}
}

func run1(name string, args ...string) error {
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

func nftApply(ruleset string) error {
	cmd := exec.Command("nft", "-f", "-")
	cmd.Stdin = strings.NewReader(ruleset)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("nft -f: %w: %s", err, strings.TrimSpace(string(out)))
	}
	return nil
}

func tailString(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
