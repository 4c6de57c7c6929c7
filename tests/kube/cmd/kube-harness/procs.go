package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
)

// proc is one component process, its output in a log file.
type proc struct {
	name, log string
	cmd       *exec.Cmd
	done      chan struct{} // closed once it exited; err is then set
	err       error
	stopping  atomic.Bool // an exit after stop() is expected
}

func startProc(name, logPath string, env []string, bin string, args ...string) (*proc, error) {
	f, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout = f
	cmd.Stderr = f
	cmd.Env = env
	// Own process group: a Ctrl-C in the harness's terminal reaches the
	// harness alone, which then stops the components in order.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, err
	}
	p := &proc{name: name, log: logPath, cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		f.Close()
		close(p.done)
	}()
	return p, nil
}

func (p *proc) exitedNow() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop: SIGTERM, then SIGKILL after timeout; waits for the exit.
func (p *proc) stop(timeout time.Duration) {
	p.stopping.Store(true)
	if p.exitedNow() {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(timeout):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// setSubreaper makes this process the parent of every orphan among its
// descendants: containerd's shims daemonize (their parent exits), and
// would otherwise be re-parented to init, out of the harness's reach.
func setSubreaper() error {
	const prSetChildSubreaper = 36
	_, _, errno := syscall.RawSyscall(syscall.SYS_PRCTL, prSetChildSubreaper, 1, 0)
	if errno != 0 {
		return errno
	}
	return nil
}

type procInfo struct {
	pid, ppid int
	state     byte
	comm      string
}

func listProcs() map[int]procInfo {
	out := map[int]procInfo{}
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...; comm may hold spaces and parentheses.
		s := string(b)
		open, close := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
		if open < 0 || close < 0 || close+2 >= len(s) {
			continue
		}
		fields := strings.Fields(s[close+2:])
		if len(fields) < 2 {
			continue
		}
		ppid, _ := strconv.Atoi(fields[1])
		out[pid] = procInfo{pid: pid, ppid: ppid, state: fields[0][0], comm: s[open+1 : close]}
	}
	return out
}

// descendants of this process, zombies included, but the subtrees of keep.
func descendants(keep map[int]bool) []procInfo {
	all := listProcs()
	self := os.Getpid()
	var out []procInfo
	for _, p := range all {
		for q, seen := p, 0; seen < 64; seen++ {
			if keep[q.pid] {
				break
			}
			if q.ppid == self {
				out = append(out, p)
				break
			}
			next, ok := all[q.ppid]
			if !ok || q.ppid <= 1 {
				break
			}
			q = next
		}
	}
	return out
}

// killDescendants SIGKILLs every live descendant by PID, but those in
// keep (components still running) and their own descendants, until none is
// left (or timeout); reaps the zombies that are this process's children;
// returns how many it killed.
func killDescendants(timeout time.Duration, keep map[int]bool) int {
	killed := map[int]bool{}
	deadline := time.Now().Add(timeout)
	for {
		live := 0
		for _, p := range descendants(keep) {
			if p.state == 'Z' {
				if p.ppid == os.Getpid() {
					var ws syscall.WaitStatus
					_, _ = syscall.Wait4(p.pid, &ws, syscall.WNOHANG, nil)
				}
				continue
			}
			live++
			if !killed[p.pid] {
				killed[p.pid] = true
			}
			_ = syscall.Kill(p.pid, syscall.SIGKILL)
		}
		if live == 0 || time.Now().After(deadline) {
			return len(killed)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
