package e2e

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/kfault/kfault/test/e2e/vmtest"
)

// `kfault inject` on a plain cgroup, as bcc's inject.py is used: --times 3 fails the first
// three mkdirs of a shell in the victim cgroup and no more; the command then exits by itself,
// prints the total, and has printed each sampled injection with the shell's pid. A shell in a
// sibling cgroup runs the same mkdirs at the same time and none fails.
func TestInjectCommand(t *testing.T) {
	vmtest.RequireInjection(t)
	root := filepath.Join("/sys/fs/cgroup", fmt.Sprintf("kfault-inject-%d", os.Getpid()))
	victim, bystander := filepath.Join(root, "victim"), filepath.Join(root, "bystander")
	for _, d := range []string{root, victim, bystander} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		for _, d := range []string{victim, bystander, root} {
			os.Remove(d)
		}
	})

	cmd := exec.Command(vmtest.KfaultBinary(), "inject", "--function", "__x64_sys_mkdir", "--errno", "EACCES",
		"--times", "3", "--cgroup", victim)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stdout strings.Builder
	cmd.Stdout = &stdout
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			cmd.Wait()
		}
	})
	lines := make(chan string, 64)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	var errLog []string
	deadline := time.After(time.Minute)
armed:
	for {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("kfault inject exited before arming: %s", strings.Join(errLog, "\n"))
			}
			errLog = append(errLog, l)
			if strings.Contains(l, "armed on") {
				break armed
			}
		case <-deadline:
			t.Fatalf("kfault inject did not arm within a minute: %s", strings.Join(errLog, "\n"))
		}
	}

	// Both shells start together; each prints "try N ok|FAILED" for 5 mkdirs.
	victimSh, victimOut := shellIn(t, victim, 5)
	bySh, byOut := shellIn(t, bystander, 5)
	for _, c := range []*exec.Cmd{victimSh, bySh} {
		if err := c.Wait(); err != nil {
			t.Errorf("shell: %v", err)
		}
	}
	vt, bt := vmtest.Tries(victimOut.String()), vmtest.Tries(byOut.String())
	t.Logf("victim: %s; bystander: %s", vmtest.Summary(vt), vmtest.Summary(bt))
	if len(vt) != 5 || vmtest.Failed(vt) != 3 || vt[2].OK || !vt[3].OK {
		t.Errorf("victim: want tries 1-3 to fail and 4-5 to succeed: %s\n%s", vmtest.Summary(vt), victimOut.String())
	}
	if len(bt) != 5 || vmtest.Failed(bt) != 0 {
		t.Errorf("bystander: want 5 successful tries: %s\n%s", vmtest.Summary(bt), byOut.String())
	}

	done := make(chan error, 1)
	go func() {
		for l := range lines {
			errLog = append(errLog, l)
		}
		done <- cmd.Wait()
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("kfault inject: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("kfault inject did not exit after its times budget: %s", strings.Join(errLog, "\n"))
	}
	t.Logf("kfault inject stderr:\n%s\nstdout: %s", strings.Join(errLog, "\n"), stdout.String())
	if got := strings.TrimSpace(stdout.String()); got != "injected 3 faults (times reached)" {
		t.Errorf("kfault inject printed %q, want %q", got, "injected 3 faults (times reached)")
	}
	sample := regexp.MustCompile(`fault 0 \(__x64_sys_mkdir\) #(\d) hit pid \d+ \([^)]+\) in process \d+: returned -13$`)
	var seqs []string
	for _, l := range errLog {
		if m := sample.FindStringSubmatch(l); m != nil {
			seqs = append(seqs, m[1])
		}
	}
	if strings.Join(seqs, ",") != "1,2,3" {
		t.Errorf("sampled injections printed: %v, want #1, #2, #3 each hitting a mkdir", seqs)
	}
}

// shellIn starts a busybox shell in the cgroup dir that runs n mkdirs, one try each.
func shellIn(t *testing.T, dir string, n int) (*exec.Cmd, *strings.Builder) {
	t.Helper()
	tmp := t.TempDir()
	script := fmt.Sprintf(`i=1; while [ $i -le %d ]; do if mkdir %s/try$i 2>/dev/null; then echo "try $i ok"; else echo "try $i FAILED"; fi; i=$((i+1)); done`, n, tmp)
	out := &strings.Builder{}
	c := exec.Command("busybox", "sh", "-c", script)
	c.Stdout, c.Stderr = out, out
	if err := vmtest.StartInCgroup(c, dir); err != nil {
		t.Fatal(err)
	}
	return c, out
}
