package vmtest

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kfault/kfault/plugin"
)

// KfaultBinary is the kfault command the e2e tests run (out/bin/kfault, on PATH in the VM).
func KfaultBinary() string {
	if p, err := exec.LookPath("kfault"); err == nil {
		return p
	}
	return filepath.Join(RepoRoot(), "out/bin/kfault")
}

// Plugin is a `kfault nri` started by hand by a test, with its own state directory, control
// socket and log file under /run/kfault-e2e/<name>. It is stopped at cleanup.
type Plugin struct {
	t    testing.TB
	Name string
	// Dir holds the state directory, the control socket and the log file.
	Dir, StateDir, ControlSocket, LogFile string
	// MetricsAddress is the --metrics-address, if any.
	MetricsAddress string
	// ConfigFile is the --config file, written from PluginOptions.Config.
	ConfigFile string
	// Args are extra flags.
	Args []string
	// CgroupNamespace runs the plugin in its own cgroup namespace (see PluginOptions).
	CgroupNamespace bool

	cmd      *exec.Cmd
	done     chan struct{}
	logStart int64 // offset in LogFile where the current instance's lines begin
}

// PluginOptions are optional settings for StartPlugin.
type PluginOptions struct {
	MetricsAddress string
	Args           []string
	// CgroupNamespace runs kfault nri in a cgroup of its own and in a cgroup namespace rooted
	// there, as a Kubernetes DaemonSet pod on cgroup v2 runs (with the host's /sys/fs/cgroup
	// still mounted, as the DaemonSet's hostPath gives it): /proc/<pid>/cgroup of a container
	// then reads "0::/../..." and only the OCI cgroupsPath can locate its cgroup.
	CgroupNamespace bool
	// Config is the node config (YAML). Empty: AllowEveryNamespace, since kfault's own
	// default injects nothing.
	Config string
}

// AllowEveryNamespace is the node config the tests run with unless they give their own:
// every namespace but the default deny list (kube-system).
const AllowEveryNamespace = `allowedNamespaces: ["*"]`

// StartPlugin starts `kfault nri` and waits until it has registered with containerd.
func StartPlugin(t testing.TB, name string, o PluginOptions) *Plugin {
	t.Helper()
	dir := filepath.Join("/run/kfault-e2e", name)
	os.RemoveAll(dir)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	p := &Plugin{
		t: t, Name: name, Dir: dir,
		StateDir:        filepath.Join(dir, "state"),
		ControlSocket:   filepath.Join(dir, "control.sock"),
		LogFile:         filepath.Join(dir, "kfault.log"),
		ConfigFile:      filepath.Join(dir, "config.yaml"),
		MetricsAddress:  o.MetricsAddress,
		Args:            o.Args,
		CgroupNamespace: o.CgroupNamespace,
	}
	config := o.Config
	if config == "" {
		config = AllowEveryNamespace
	}
	if err := os.WriteFile(p.ConfigFile, []byte(config+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		p.Stop()
		if t.Failed() {
			data, _ := os.ReadFile(p.LogFile)
			t.Logf("plugin log (%s):\n%s", p.LogFile, tail(string(data), 60))
		}
	})
	p.Start()
	return p
}

// Start starts a new instance (after Kill or Stop) and waits for its "registered" line.
func (p *Plugin) Start() {
	t := p.t
	t.Helper()
	if p.Running() {
		t.Fatalf("plugin %s already running (pid %d)", p.Name, p.Pid())
	}
	if fi, err := os.Stat(p.LogFile); err == nil {
		p.logStart = fi.Size()
	} else {
		p.logStart = 0
	}
	args := []string{"nri", "--config", p.ConfigFile, "--state-dir", p.StateDir, "--control-socket", p.ControlSocket, "--log-file", p.LogFile}
	if p.MetricsAddress != "" {
		args = append(args, "--metrics-address", p.MetricsAddress)
	}
	args = append(args, p.Args...)
	argv := append([]string{KfaultBinary()}, args...)
	if p.CgroupNamespace {
		// unshare(1) starts in the plugin's cgroup, creates the namespace there and execs
		// kfault (same pid). CLONE_NEWCGROUP on the clone itself would root the namespace at
		// this test's cgroup instead.
		argv = append([]string{"unshare", "--cgroup"}, argv...)
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stderr, &stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	start := time.Now()
	var err error
	if p.CgroupNamespace {
		cg := filepath.Join("/sys/fs/cgroup", "kfault-e2e-"+p.Name)
		if err := os.Mkdir(cg, 0o755); err != nil && !os.IsExist(err) {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.Remove(cg) })
		err = StartInCgroup(cmd, cg)
	} else {
		err = cmd.Start()
	}
	if err != nil {
		t.Fatalf("starting kfault nri: %v", err)
	}
	p.cmd = cmd
	done := make(chan struct{})
	p.done = done
	go func() { cmd.Wait(); close(done) }()
	_, err = p.waitLog(60*time.Second, func(e LogEntry) bool { return e.Msg() == "registered" })
	if err != nil {
		data, _ := os.ReadFile(p.LogFile)
		t.Fatalf("kfault nri did not register: %v\nstderr: %s\nlog:\n%s", err, stderr.String(), tail(string(data), 40))
	}
	t.Logf("kfault nri (pid %d) registered in %.2fs", cmd.Process.Pid, time.Since(start).Seconds())
}

// Running says whether the current instance is alive.
func (p *Plugin) Running() bool {
	if p.cmd == nil {
		return false
	}
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// Pid is the current instance's pid.
func (p *Plugin) Pid() int {
	if p.cmd == nil {
		return 0
	}
	return p.cmd.Process.Pid
}

// Kill sends SIGKILL and waits for the process to be gone.
func (p *Plugin) Kill() { p.signal(syscall.SIGKILL) }

// Stop sends SIGTERM (SIGKILL after 20s) and waits.
func (p *Plugin) Stop() { p.signal(syscall.SIGTERM) }

func (p *Plugin) signal(sig syscall.Signal) {
	if !p.Running() {
		return
	}
	p.cmd.Process.Signal(sig)
	select {
	case <-p.done:
	case <-time.After(20 * time.Second):
		p.cmd.Process.Kill()
		<-p.done
	}
}

// LogEntry is one JSON log line of the plugin.
type LogEntry map[string]any

// Msg is the line's message.
func (e LogEntry) Msg() string { s, _ := e["msg"].(string); return s }

// Str is a string attribute.
func (e LogEntry) Str(k string) string {
	switch v := e[k].(type) {
	case string:
		return v
	case nil:
		return ""
	default:
		return fmt.Sprint(v)
	}
}

// Num is a numeric attribute (NaN-free: 0 and false when absent).
func (e LogEntry) Num(k string) (float64, bool) {
	v, ok := e[k].(float64)
	return v, ok
}

// Log returns the current instance's log lines (all instances' with all=true).
func (p *Plugin) Log(all bool) []LogEntry {
	data, err := os.ReadFile(p.LogFile)
	if err != nil {
		return nil
	}
	if !all && int64(len(data)) >= p.logStart {
		data = data[p.logStart:]
	}
	return ParseLog(data)
}

// ParseLog parses JSON log lines, skipping others.
func ParseLog(data []byte) []LogEntry {
	var out []LogEntry
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var e LogEntry
		if json.Unmarshal(sc.Bytes(), &e) == nil {
			out = append(out, e)
		}
	}
	return out
}

// WaitLog waits for a line of the current instance matching match and returns it.
func (p *Plugin) WaitLog(timeout time.Duration, what string, match func(LogEntry) bool) LogEntry {
	p.t.Helper()
	e, err := p.waitLog(timeout, match)
	if err != nil {
		data, _ := os.ReadFile(p.LogFile)
		p.t.Fatalf("plugin log: no %s line after %s\n%s", what, timeout, tail(string(data[min(int64(len(data)), p.logStart):]), 40))
	}
	return e
}

func (p *Plugin) waitLog(timeout time.Duration, match func(LogEntry) bool) (LogEntry, error) {
	deadline := time.Now().Add(timeout)
	for {
		for _, e := range p.Log(false) {
			if match(e) {
				return e, nil
			}
		}
		if p.cmd != nil && !p.Running() {
			return nil, fmt.Errorf("kfault nri exited (%v)", p.cmd.ProcessState)
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("timed out after %s", timeout)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// ArmedLine matches the plugin's "armed" line for a container (by name; and pod if not empty).
func ArmedLine(pod, container string) func(LogEntry) bool {
	return func(e LogEntry) bool {
		return e.Msg() == "armed" && e.Str("source") != "" && e.Str("container") == container &&
			(pod == "" || e.Str("pod") == pod)
	}
}

// Status runs `kfault status --json` against the plugin's control socket.
func (p *Plugin) Status() plugin.Status {
	p.t.Helper()
	out := Run(p.t, KfaultBinary(), "status", "--socket", p.ControlSocket, "--json")
	var st plugin.Status
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		p.t.Fatalf("kfault status --json: %v\n%s", err, out)
	}
	return st
}

// State reads the plugin's state file as it is now. The plugin writes it in the background
// (a few milliseconds after an arm or disarm, longer for a large state; `kfault disarm` and
// the plugin's exit wait for it): to see the effect of an event, use WaitState.
func (p *Plugin) State() map[string]plugin.Entry {
	p.t.Helper()
	data, err := os.ReadFile(filepath.Join(p.StateDir, plugin.StateFileName))
	if err != nil {
		p.t.Fatal(err)
	}
	var f struct {
		Containers map[string]plugin.Entry `json:"containers"`
	}
	if err := json.Unmarshal(data, &f); err != nil {
		p.t.Fatalf("state file: %v", err)
	}
	return f.Containers
}

// WaitState reads the state file until ok accepts it, and returns it; after timeout it reports
// an error (the test goes on) and returns the last one read.
func (p *Plugin) WaitState(timeout time.Duration, what string, ok func(map[string]plugin.Entry) bool) map[string]plugin.Entry {
	p.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		st := p.State()
		if ok(st) {
			return st
		}
		if time.Now().After(deadline) {
			p.t.Errorf("state file: no %s within %v; it has %+v", what, timeout, st)
			return st
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// debugGet fetches path from the plugin's control socket (which also serves /debug/pprof/).
func (p *Plugin) debugGet(path string) []byte {
	p.t.Helper()
	c := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", p.ControlSocket)
	}}}
	resp, err := c.Get("http://kfault" + path)
	if err != nil {
		p.t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		p.t.Fatalf("GET %s: %s %v", path, resp.Status, err)
	}
	return data
}

// HeapTop fetches the plugin's heap profile from its control socket and returns what
// `go tool pprof -top` says of its in-use memory: the n largest allocators.
func (p *Plugin) HeapTop(n int) string {
	p.t.Helper()
	path := filepath.Join(p.t.TempDir(), "heap.pb.gz")
	if err := os.WriteFile(path, p.debugGet("/debug/pprof/heap"), 0o600); err != nil {
		p.t.Fatal(err)
	}
	out, err := Output("go", "tool", "pprof", "-top", "-sample_index=inuse_space", fmt.Sprintf("-nodecount=%d", n), path)
	if err != nil {
		return fmt.Sprintf("go tool pprof: %v: %s", err, out)
	}
	return out
}

// GoMemory is what the plugin's Go runtime says of its memory (runtime.MemStats, from the heap
// profile's text form), in bytes: where the anonymous part of its RSS goes.
type GoMemory struct {
	HeapInuse, HeapIdle, HeapReleased, NextGC, StackInuse, Sys uint64
}

func (m GoMemory) String() string {
	mib := func(b uint64) float64 { return float64(b) / (1 << 20) }
	return fmt.Sprintf("heap in use %.1f MiB, idle %.1f (of which returned to the OS %.1f), next GC at %.1f, stacks %.1f, all from the OS %.1f",
		mib(m.HeapInuse), mib(m.HeapIdle), mib(m.HeapReleased), mib(m.NextGC), mib(m.StackInuse), mib(m.Sys))
}

// GoMemory fetches the plugin's runtime.MemStats from its control socket.
func (p *Plugin) GoMemory() GoMemory {
	p.t.Helper()
	text := string(p.debugGet("/debug/pprof/heap?debug=1"))
	var m GoMemory
	for name, v := range map[string]*uint64{
		"HeapInuse": &m.HeapInuse, "HeapIdle": &m.HeapIdle, "HeapReleased": &m.HeapReleased,
		"NextGC": &m.NextGC, "Stack": &m.StackInuse, "Sys": &m.Sys, // Stack: "in use / from the OS"
	} {
		match := regexp.MustCompile(`(?m)^# ` + name + ` = (\d+)( / \d+)?$`).FindStringSubmatch(text)
		if match == nil {
			p.t.Fatalf("heap profile: no %s in runtime.MemStats", name)
		}
		*v, _ = strconv.ParseUint(match[1], 10, 64)
	}
	return m
}

// Memory is the plugin's resident memory.
func (p *Plugin) Memory() Memory {
	p.t.Helper()
	return ProcMemory(p.t, p.Pid())
}

// Memory is what /proc/<pid>/status says of a process's resident memory, in KiB. RSS (VmRSS)
// is Anon (heap, stacks) plus File (pages of mapped files, mostly the binary's: clean, shared,
// and reclaimable under pressure) plus shared memory.
type Memory struct{ RSS, Anon, File int }

// ProcMemory reads a process's Memory.
func ProcMemory(t testing.TB, pid int) Memory {
	t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	var m Memory
	for name, v := range map[string]*int{"VmRSS": &m.RSS, "RssAnon": &m.Anon, "RssFile": &m.File} {
		match := regexp.MustCompile(`(?m)^` + name + `:\s+(\d+) kB`).FindSubmatch(data)
		if match == nil {
			t.Fatalf("/proc/%d/status: no %s", pid, name)
		}
		*v, _ = strconv.Atoi(string(match[1]))
	}
	return m
}

// RestartContainerd restarts containerd (containers keep running) and waits for its sockets.
func RestartContainerd(t testing.TB) {
	t.Helper()
	Run(t, filepath.Join(RepoRoot(), "test/vm/containerd-up"), "--restart")
}

// BPFObjects lists the loaded BPF programs and maps whose names start with prefix, and the
// BPF links whose program is one of those programs (from bpftool).
type BPFObjects struct {
	Programs []string // "id name type"
	Links    []string // "id prog_id type"
	MapIDs   map[string]int
}

// BPF lists kfault's BPF programs ("kfault_" names), their links, and kfault's maps.
func BPF(t testing.TB) BPFObjects {
	t.Helper()
	var progs []struct {
		ID   int    `json:"id"`
		Name string `json:"name"`
		Type string `json:"type"`
	}
	bpftoolJSON(t, &progs, "prog", "show")
	var links []struct {
		ID     int    `json:"id"`
		ProgID int    `json:"prog_id"`
		Type   string `json:"type"`
	}
	bpftoolJSON(t, &links, "link", "show")
	var maps []struct {
		ID   int    `json:"id"`
		Name string `json:"name"`
	}
	bpftoolJSON(t, &maps, "map", "show")
	o := BPFObjects{MapIDs: map[string]int{}}
	ours := map[int]bool{}
	for _, p := range progs {
		if strings.HasPrefix(p.Name, "kfault") {
			ours[p.ID] = true
			o.Programs = append(o.Programs, fmt.Sprintf("%d %s %s", p.ID, p.Name, p.Type))
		}
	}
	for _, l := range links {
		if ours[l.ProgID] {
			o.Links = append(o.Links, fmt.Sprintf("%d prog %d %s", l.ID, l.ProgID, l.Type))
		}
	}
	for _, m := range maps {
		if strings.HasPrefix(m.Name, "kfault") {
			o.MapIDs[m.Name] = m.ID
		}
	}
	sort.Strings(o.Programs)
	return o
}

// BPFMapEntries returns the number of entries of a hash map (bpftool map dump).
func BPFMapEntries(t testing.TB, id int) int {
	t.Helper()
	var entries []json.RawMessage
	bpftoolJSON(t, &entries, "map", "dump", "id", strconv.Itoa(id))
	return len(entries)
}

func bpftoolJSON(t testing.TB, v any, args ...string) {
	t.Helper()
	cmd := exec.Command(Bpftool(), append([]string{"-j"}, args...)...)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("bpftool %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	if len(bytes.TrimSpace(out)) == 0 {
		out = []byte("[]")
	}
	if err := json.Unmarshal(out, v); err != nil {
		t.Fatalf("bpftool %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// Bpftool is the bpftool binary.
func Bpftool() string {
	if p, err := exec.LookPath("bpftool"); err == nil {
		return p
	}
	return "/usr/sbin/bpftool"
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// Count counts the current instance's lines with message msg.
func (p *Plugin) Count(msg string) int {
	n := 0
	for _, e := range p.Log(false) {
		if e.Msg() == msg {
			n++
		}
	}
	return n
}

// WaitCount waits until the current instance has logged msg at least n times.
func (p *Plugin) WaitCount(timeout time.Duration, msg string, n int) {
	p.t.Helper()
	deadline := time.Now().Add(timeout)
	for p.Count(msg) < n {
		if time.Now().After(deadline) {
			data, _ := os.ReadFile(p.LogFile)
			p.t.Fatalf("plugin log: %d %q lines after %s, want %d\n%s", p.Count(msg), msg, timeout, n, tail(string(data), 40))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// FindLog returns the current instance's first line matching match, waiting up to 10 s.
func (p *Plugin) FindLog(match func(LogEntry) bool) (LogEntry, error) {
	return p.waitLog(10*time.Second, match)
}
