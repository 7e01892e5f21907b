package bpf

import (
	"bufio"
	"compress/gzip"
	"io"
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

// kernelConfigEnv names a kernel config file to read when the kernel exposes none: a distro
// kernel booted without its /boot, as in the test VM.
const kernelConfigEnv = "KFAULT_KERNEL_CONFIG"

// KernelConfig reports one option of the running kernel's config: "y", "m", "n" when it is not
// set, "" when no config is readable. It reads /proc/config.gz (CONFIG_IKCONFIG_PROC), else
// /boot/config-<release> (distro kernels), else the file named by $KFAULT_KERNEL_CONFIG.
func KernelConfig(name string) string {
	r, closer := openKernelConfig()
	if r == nil {
		return ""
	}
	defer closer.Close()
	return configOption(r, name)
}

func openKernelConfig() (io.Reader, io.Closer) {
	if f, err := os.Open("/proc/config.gz"); err == nil {
		if zr, err := gzip.NewReader(f); err == nil {
			return zr, f
		}
		f.Close()
	}
	var u unix.Utsname
	paths := []string{os.Getenv(kernelConfigEnv)}
	if unix.Uname(&u) == nil {
		paths = append([]string{"/boot/config-" + unix.ByteSliceToString(u.Release[:])}, paths...)
	}
	for _, p := range paths {
		if p == "" {
			continue
		}
		if f, err := os.Open(p); err == nil {
			return f, f
		}
	}
	return nil, nil
}

// configOption finds name in a kernel config: "y", "m", a value, or "n" when absent.
func configOption(r io.Reader, name string) string {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := sc.Text()
		if v, ok := strings.CutPrefix(line, name+"="); ok {
			return v
		}
	}
	return "n"
}
