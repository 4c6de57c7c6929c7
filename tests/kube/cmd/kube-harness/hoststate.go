package main

// What the node changes on the host, recorded before it starts and compared
// after it stops; and the generic undo of each kind of change.

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// hostState holds, per category, normalised lines (counters, lifetimes and
// kernel indexes left out) whose multiset is compared.
type hostState struct {
	cats    map[string][]string
	nftJSON []byte
	sysctls map[string]string
}

var categories = []string{"mounts", "links", "addrs", "routes", "nftables", "iptables-legacy", "sysctls", "cgroups", "paths", "processes"}

// Sysctls the kubelet, kube-proxy, CNI plugins or this harness may write,
// as files under /proc/sys; a trailing /* takes every file of the folder.
var sysctlPatterns = []string{
	"vm/overcommit_memory", "vm/panic_on_oom",
	"kernel/panic", "kernel/panic_on_oops", "kernel/keys/root_maxkeys", "kernel/keys/root_maxbytes",
	"net/ipv4/ip_forward", "net/ipv4/ip_local_port_range", "net/core/somaxconn",
	"net/ipv4/conf/all/*", "net/ipv4/conf/default/*", "net/ipv4/conf/lo/*",
	"net/ipv6/conf/all/*", "net/ipv6/conf/default/*", "net/ipv6/conf/lo/*",
	"net/netfilter/*", "net/bridge/*",
}

// Counters, not settings.
var sysctlSkip = map[string]bool{"net/netfilter/nf_conntrack_count": true}

// Host paths the components create when they exist nowhere else, whatever
// their flags say (the kubelet's device-plugin folder, containerd's shim
// sockets, the kubelet's /var/log/containers links), and the defaults of
// the others, in case a setting is missed.
var hostPaths = []string{
	"/var/lib/kubelet", "/run/containerd", "/var/lib/containerd", "/var/lib/cni", "/run/netns",
	"/var/log/pods", "/var/log/containers", "/opt/containerd", "/opt/cni", "/etc/cni", "/run/runc",
	"/etc/kubernetes", "/run/kubernetes",
}

func snapshotHost() (*hostState, error) {
	s := &hostState{cats: map[string][]string{}, sysctls: map[string]string{}}
	var errs []error
	add := func(cat string, lines []string, err error) {
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", cat, err))
		}
		sort.Strings(lines)
		s.cats[cat] = lines
	}
	mounts, err := readMounts()
	var ml []string
	for _, m := range mounts {
		ml = append(ml, m.point+" "+m.fstype+" "+m.source)
	}
	add("mounts", ml, err)
	links, err := cmdLines(normLink, "ip", "-o", "link")
	add("links", links, err)
	addrs, err := cmdLines(normAddr, "ip", "-o", "addr")
	add("addrs", addrs, err)
	r4, err4 := cmdLines(normRoute, "ip", "-4", "route", "show", "table", "all")
	r6, err6 := cmdLines(normRoute, "ip", "-6", "route", "show", "table", "all")
	add("routes", append(r4, r6...), errors.Join(err4, err6))
	nft, err := cmdLines(strings.TrimSpace, "nft", "--stateless", "list", "ruleset")
	add("nftables", nft, err)
	if s.nftJSON, err = exec.Command("nft", "-j", "list", "ruleset").Output(); err != nil {
		errs = append(errs, fmt.Errorf("nft -j: %w", err))
	}
	var legacy []string
	for _, b := range []string{"/usr/sbin/iptables-legacy-save", "/usr/sbin/ip6tables-legacy-save"} {
		if _, err := os.Stat(b); err == nil {
			lines, err := cmdLines(normIptables, b)
			legacy = append(legacy, lines...)
			if err != nil {
				errs = append(errs, err)
			}
		}
	}
	add("iptables-legacy", legacy, nil)
	for _, pat := range sysctlPatterns {
		files := []string{filepath.Join("/proc/sys", pat)}
		if strings.HasSuffix(pat, "/*") {
			files, _ = filepath.Glob(filepath.Join("/proc/sys", pat))
		}
		for _, f := range files {
			key := strings.TrimPrefix(f, "/proc/sys/")
			if sysctlSkip[key] {
				continue
			}
			if st, err := os.Stat(f); err != nil || st.IsDir() {
				continue
			}
			v, err := os.ReadFile(f)
			if err != nil {
				continue // unreadable by design (e.g. stable_secret)
			}
			s.sysctls[key] = strings.TrimSpace(string(v))
		}
	}
	var sl []string
	for k, v := range s.sysctls {
		sl = append(sl, k+"="+strings.Join(strings.Fields(v), " "))
	}
	add("sysctls", sl, nil)
	var cg []string
	for _, h := range cgroupHierarchies() {
		_ = filepath.WalkDir(h, func(p string, d fs.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				cg = append(cg, p)
			}
			return nil
		})
	}
	add("cgroups", cg, nil)
	var pl []string
	for _, p := range hostPaths {
		pl = append(pl, describePath(p))
	}
	add("paths", pl, nil)
	var procs []string
	for _, p := range descendants(nil) {
		procs = append(procs, fmt.Sprintf("%d %s %c", p.pid, p.comm, p.state))
	}
	add("processes", procs, nil)
	return s, errors.Join(errs...)
}

func (s *hostState) summary() string {
	var parts []string
	for _, c := range categories {
		parts = append(parts, fmt.Sprintf("%s=%d", c, len(s.cats[c])))
	}
	return strings.Join(parts, " ")
}

// diff lists what differs from s in after, one "CATEGORY -|+ LINE" each.
func (s *hostState) diff(after *hostState) []string {
	var out []string
	for _, c := range categories {
		count := map[string]int{}
		for _, l := range s.cats[c] {
			count[l]++
		}
		for _, l := range after.cats[c] {
			count[l]--
		}
		var lines []string
		for l, n := range count {
			for ; n > 0; n-- {
				lines = append(lines, c+" - "+l)
			}
			for ; n < 0; n++ {
				lines = append(lines, c+" + "+l)
			}
		}
		sort.Strings(lines)
		out = append(out, lines...)
	}
	return out
}

func cmdLines(norm func(string) string, name string, args ...string) ([]string, error) {
	out, err := exec.Command(name, args...).Output()
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", name, strings.Join(args, " "), err)
	}
	var lines []string
	for _, l := range strings.Split(string(out), "\n") {
		if l = norm(l); l != "" {
			lines = append(lines, l)
		}
	}
	return lines, nil
}

var (
	// "4: eth0@if5: <FLAGS> mtu 1500 qdisc ..." -> "eth0 <FLAGS> mtu 1500"
	linkRe = regexp.MustCompile(`^\d+:\s+([^:@\s]+)(?:@\S+)?:\s+(<\S*>)\s+mtu\s+(\d+)`)
	// "1: lo    inet 127.0.0.1/8 scope host lo\ valid_lft ..." -> "lo inet 127.0.0.1/8"
	addrRe     = regexp.MustCompile(`^\d+:\s+(\S+)\s+(inet6?)\s+(\S+)`)
	expiresRe  = regexp.MustCompile(`\s+expires \S+`)
	counterRe  = regexp.MustCompile(`\[\d+:\d+\]`)
	spacesRe   = regexp.MustCompile(`\s+`)
	mountEscRe = regexp.MustCompile(`\\[0-7]{3}`)
)

func normLink(l string) string {
	m := linkRe.FindStringSubmatch(l)
	if m == nil {
		return ""
	}
	return m[1] + " " + m[2] + " mtu " + m[3]
}

func normAddr(l string) string {
	m := addrRe.FindStringSubmatch(l)
	if m == nil {
		return ""
	}
	return m[1] + " " + m[2] + " " + m[3]
}

func normRoute(l string) string {
	return strings.TrimSpace(spacesRe.ReplaceAllString(expiresRe.ReplaceAllString(l, ""), " "))
}

func normIptables(l string) string {
	l = strings.TrimSpace(l)
	if strings.HasPrefix(l, "#") {
		return ""
	}
	return strings.TrimSpace(counterRe.ReplaceAllString(l, ""))
}

type mount struct{ point, fstype, source string }

func readMounts() ([]mount, error) {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	var out []mount
	for _, l := range strings.Split(string(b), "\n") {
		// id parent major:minor root mountpoint options [optional...] - fstype source superoptions
		pre, post, ok := strings.Cut(l, " - ")
		if !ok {
			continue
		}
		f, g := strings.Fields(pre), strings.Fields(post)
		if len(f) < 5 || len(g) < 2 {
			continue
		}
		out = append(out, mount{point: unescapeMount(f[4]), fstype: g[0], source: g[1]})
	}
	return out, nil
}

func unescapeMount(s string) string {
	return mountEscRe.ReplaceAllStringFunc(s, func(e string) string {
		v, _ := strconv.ParseUint(e[1:], 8, 8)
		return string(rune(v))
	})
}

func cgroupHierarchies() []string {
	mounts, _ := readMounts()
	var out []string
	for _, m := range mounts {
		if m.fstype == "cgroup" || m.fstype == "cgroup2" {
			out = append(out, m.point)
		}
	}
	sort.Strings(out)
	return out
}

func describePath(p string) string {
	st, err := os.Lstat(p)
	if err != nil {
		return p + " absent"
	}
	if !st.IsDir() {
		return p + " " + st.Mode().Type().String()
	}
	n := 0
	_ = filepath.WalkDir(p, func(_ string, _ fs.DirEntry, err error) error {
		n++
		if n > 100000 {
			return filepath.SkipAll
		}
		return nil
	})
	return fmt.Sprintf("%s dir entries=%d", p, n-1)
}

// under reports whether p is prefix or inside it.
func under(p, prefix string) bool {
	return p == prefix || strings.HasPrefix(p, strings.TrimSuffix(prefix, "/")+"/")
}

// unmountNew unmounts, deepest first, every mount under one of prefixes
// that was not there before (containerd's overlays, shm and netns bind
// mounts, the kubelet's volume tmpfs), repeating for stacked mounts.
func unmountNew(before *hostState, prefixes []string) error {
	had := map[string]int{}
	for _, l := range before.cats["mounts"] {
		had[strings.SplitN(l, " ", 2)[0]]++
	}
	var errs []error
	for round := 0; round < 5; round++ {
		mounts, err := readMounts()
		if err != nil {
			return err
		}
		seen := map[string]int{}
		var todo []string
		for _, m := range mounts {
			seen[m.point]++
			if seen[m.point] <= had[m.point] {
				continue
			}
			for _, p := range prefixes {
				if under(m.point, p) {
					todo = append(todo, m.point)
					break
				}
			}
		}
		if len(todo) == 0 {
			return errors.Join(errs...)
		}
		sort.Slice(todo, func(i, j int) bool { return len(todo[i]) > len(todo[j]) })
		errs = nil
		for _, p := range todo {
			if err := syscall.Unmount(p, 0); err != nil {
				if err2 := syscall.Unmount(p, syscall.MNT_DETACH); err2 != nil {
					errs = append(errs, fmt.Errorf("umount %s: %v, lazily: %v", p, err, err2))
				}
			}
		}
	}
	return errors.Join(append(errs, errors.New("mounts remain after 5 rounds"))...)
}

// removeNewVeths deletes the veths that appeared since before (CNI ptp's
// host ends; deleting one removes its pair and its routes).
func removeNewVeths(before *hostState) error {
	had := map[string]bool{}
	for _, l := range before.cats["links"] {
		had[strings.SplitN(l, " ", 2)[0]] = true
	}
	lines, err := cmdLines(normLink, "ip", "-o", "link", "show", "type", "veth")
	if err != nil {
		return err
	}
	var errs []error
	for _, l := range lines {
		name := strings.SplitN(l, " ", 2)[0]
		if !had[name] {
			if err := run1("ip", "link", "del", name); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

// nftRestore removes what was added to nftables since before: new tables
// whole; in tables that were there, new rules (by handle), chains, sets
// and maps. kube-proxy --cleanup has normally removed its table already.
func nftRestore(before *hostState) error {
	now, err := exec.Command("nft", "-j", "list", "ruleset").Output()
	if err != nil {
		return fmt.Errorf("nft -j list ruleset: %w", err)
	}
	old, cur := parseNft(before.nftJSON), parseNft(now)
	var errs []error
	for t := range cur.tables {
		if !old.tables[t] {
			f := strings.SplitN(t, " ", 2)
			if err := run1("nft", "delete", "table", f[0], f[1]); err != nil {
				errs = append(errs, err)
			}
		}
	}
	for _, r := range cur.rules {
		if old.tables[r.table] && !old.ruleHandles[r.key()] {
			f := strings.SplitN(r.table, " ", 2)
			if err := run1("nft", "delete", "rule", f[0], f[1], r.chain, "handle", strconv.Itoa(r.handle)); err != nil {
				errs = append(errs, err)
			}
		}
	}
	for _, c := range cur.chains {
		if old.tables[c.table] && !old.chainSet[c.table+" "+c.name] {
			f := strings.SplitN(c.table, " ", 2)
			_ = run1("nft", "flush", "chain", f[0], f[1], c.name)
			if err := run1("nft", "delete", "chain", f[0], f[1], c.name); err != nil {
				errs = append(errs, err)
			}
		}
	}
	for _, s := range cur.sets {
		if old.tables[s.table] && !old.setSet[s.kind+" "+s.table+" "+s.name] {
			f := strings.SplitN(s.table, " ", 2)
			if err := run1("nft", "delete", s.kind, f[0], f[1], s.name); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

type nftRule struct {
	table, chain string
	handle       int
}

func (r nftRule) key() string { return fmt.Sprintf("%s %s %d", r.table, r.chain, r.handle) }

type nftNamed struct{ kind, table, name string }

type nftState struct {
	tables, ruleHandles, chainSet, setSet map[string]bool
	rules                                 []nftRule
	chains, sets                          []nftNamed
}

func parseNft(b []byte) nftState {
	s := nftState{tables: map[string]bool{}, ruleHandles: map[string]bool{}, chainSet: map[string]bool{}, setSet: map[string]bool{}}
	var doc struct {
		Nftables []map[string]json.RawMessage `json:"nftables"`
	}
	_ = json.Unmarshal(b, &doc)
	type obj struct {
		Family, Table, Name, Chain string
		Handle                     int
	}
	for _, item := range doc.Nftables {
		for kind, raw := range item {
			var o obj
			if json.Unmarshal(raw, &o) != nil {
				continue
			}
			switch kind {
			case "table":
				s.tables[o.Family+" "+o.Name] = true
			case "chain":
				t := o.Family + " " + o.Table
				s.chainSet[t+" "+o.Name] = true
				s.chains = append(s.chains, nftNamed{"chain", t, o.Name})
			case "rule":
				r := nftRule{o.Family + " " + o.Table, o.Chain, o.Handle}
				s.ruleHandles[r.key()] = true
				s.rules = append(s.rules, r)
			case "set", "map":
				t := o.Family + " " + o.Table
				s.setSet[kind+" "+t+" "+o.Name] = true
				s.sets = append(s.sets, nftNamed{kind, t, o.Name})
			}
		}
	}
	return s
}

// restoreSysctls writes back every recorded sysctl whose value changed.
func restoreSysctls(before *hostState) error {
	var errs []error
	for key, v := range before.sysctls {
		f := filepath.Join("/proc/sys", key)
		now, err := os.ReadFile(f)
		if err != nil || strings.TrimSpace(string(now)) == v {
			continue
		}
		if err := os.WriteFile(f, []byte(v), 0o644); err != nil {
			errs = append(errs, fmt.Errorf("%s back to %q: %w", key, v, err))
		}
	}
	return errors.Join(errs...)
}

// removeCgroups removes cgroup name and everything under it in every
// hierarchy, deepest first; processes still in one are killed first (they
// can only be the node's).
func removeCgroups(name string) error {
	var errs []error
	for _, h := range cgroupHierarchies() {
		root := filepath.Join(h, name)
		var dirs []string
		_ = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
		sort.Slice(dirs, func(i, j int) bool { return len(dirs[i]) > len(dirs[j]) })
		for _, d := range dirs {
			if err := rmdirCgroup(d); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

func rmdirCgroup(d string) error {
	var err error
	for try := 0; try < 50; try++ {
		if err = syscall.Rmdir(d); err == nil || errors.Is(err, syscall.ENOENT) {
			return nil
		}
		if b, rerr := os.ReadFile(filepath.Join(d, "cgroup.procs")); rerr == nil {
			for _, f := range strings.Fields(string(b)) {
				if pid, _ := strconv.Atoi(f); pid > 1 {
					_ = syscall.Kill(pid, syscall.SIGKILL)
				}
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("rmdir %s: %w", d, err)
}

// removeNewPaths removes the host paths (hostPaths) that did not exist
// before, and in /var/log/containers the kubelet's links into dir.
func removeNewPaths(before *hostState, dir string) error {
	had := map[string]bool{}
	for _, l := range before.cats["paths"] {
		if !strings.HasSuffix(l, " absent") {
			had[strings.SplitN(l, " ", 2)[0]] = true
		}
	}
	var errs []error
	for _, p := range hostPaths {
		if had[p] {
			continue
		}
		if _, err := os.Lstat(p); err == nil {
			if err := os.RemoveAll(p); err != nil {
				errs = append(errs, err)
			}
		}
	}
	if had["/var/log/containers"] {
		links, _ := filepath.Glob("/var/log/containers/*")
		for _, l := range links {
			if t, err := os.Readlink(l); err == nil && under(t, dir) {
				_ = os.Remove(l)
			}
		}
	}
	return errors.Join(errs...)
}
