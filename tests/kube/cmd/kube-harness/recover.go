package main

// A harness killed outright (SIGKILL, OOM) cannot tear down: its components
// die with it (Pdeathsig), but the shims and containers it had adopted, the
// mounts, veths, the lo address, the guard table, sysctls and cgroups stay.
// It leaves a journal, which the next harness finds (holding the lock, so
// its writer is gone) and undoes before it starts.

import (
	"encoding/json"
	"errors"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

const journalPath = "/run/sluice-node.journal"

type journal struct {
	Pid       int
	Dir, Data string
	Before    *hostState
}

func (s *hostState) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		Cats    map[string][]string
		NftJSON []byte
		Sysctls map[string]string
	}{s.cats, s.nftJSON, s.sysctls})
}

func (s *hostState) UnmarshalJSON(b []byte) error {
	var v struct {
		Cats    map[string][]string
		NftJSON []byte
		Sysctls map[string]string
	}
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	s.cats, s.nftJSON, s.sysctls = v.Cats, v.NftJSON, v.Sysctls
	return nil
}

func writeJournal(j journal) error {
	b, err := json.Marshal(j)
	if err != nil {
		return err
	}
	tmp := journalPath + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, journalPath)
}

// recoverDeadRun undoes the run a journal describes, if there is one; the
// caller holds the node lock.
func recoverDeadRun() error {
	b, err := os.ReadFile(journalPath)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var j journal
	if err := json.Unmarshal(b, &j); err != nil || j.Before == nil || j.Dir == "" {
		return fmt.Errorf("%s is unreadable (%v): remove it once the host is clean", journalPath, err)
	}
	log.Printf("recovering the host from a harness that died without teardown (pid %d, dir %s)", j.Pid, j.Dir)
	socket := filepath.Join(j.Dir, "node/containerd/containerd.sock")
	for try := 0; try < 50; try++ {
		// Containers are in the node's cgroups; shims name its socket.
		pids := cgroupPids(cgroupRoot)
		for _, p := range listProcs() {
			cmdline, _ := os.ReadFile(filepath.Join("/proc", strconv.Itoa(p.pid), "cmdline"))
			if strings.Contains(string(cmdline), socket) {
				pids = append(pids, p.pid)
			}
		}
		if len(pids) == 0 {
			break
		}
		for _, pid := range pids {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err := unmountNew(j.Before, mountPrefixes(j.Dir)); err != nil {
		log.Printf("recovery: unmount: %v", err)
	}
	if err := removeNewVeths(j.Before); err != nil {
		log.Printf("recovery: veths: %v", err)
	}
	if !hadLine(j.Before, "addrs", "lo inet "+nodeIP+"/32") {
		_ = run1("ip", "addr", "del", nodeIP+"/32", "dev", "lo")
	}
	if err := removeCgroups(cgroupRoot); err != nil {
		log.Printf("recovery: cgroups: %v", err)
	}
	restoreHost(j.Before, j.Dir, "recovery")
	_ = os.RemoveAll(j.Data)
	_ = os.RemoveAll(filepath.Join(j.Dir, "node"))
	now, err := snapshotHost()
	if err != nil {
		return err
	}
	// Processes are this harness's own; the dead one's were never its.
	var left []string
	for _, d := range j.Before.diff(now) {
		if !strings.HasPrefix(d, "processes ") {
			left = append(left, d)
		}
	}
	for _, d := range left {
		log.Printf("recovery: still differs from before the dead run: %s", d)
	}
	if err := os.Remove(journalPath); err != nil {
		return err
	}
	if len(left) > 0 {
		log.Printf("recovery: %d differences remain (changes made by others since, or not undone); starting anyway", len(left))
	}
	return nil
}

func hadLine(s *hostState, cat, line string) bool {
	for _, l := range s.cats[cat] {
		if l == line {
			return true
		}
	}
	return false
}

// cgroupPids lists the processes in cgroup name and below, in every hierarchy.
func cgroupPids(name string) []int {
	var out []int
	for _, h := range cgroupHierarchies() {
		_ = filepath.WalkDir(filepath.Join(h, name), func(p string, d os.DirEntry, err error) error {
			if err != nil || !d.IsDir() {
				return nil
			}
			b, _ := os.ReadFile(filepath.Join(p, "cgroup.procs"))
			for _, f := range strings.Fields(string(b)) {
				if pid, err := strconv.Atoi(f); err == nil {
					out = append(out, pid)
				}
			}
			return nil
		})
	}
	return out
}
