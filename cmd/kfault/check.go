package main

import (
	"errors"
	"flag"
	"fmt"
	"io"

	"github.com/kfault/kfault/bpf"
	"github.com/kfault/kfault/plugin"
)

func runCheck(args []string, _ io.Reader, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("kfault check", flag.ContinueOnError)
	fs.SetOutput(stderr)
	noMount := fs.Bool("no-mount", false, "do not mount debugfs at /sys/kernel/debug when it is missing")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: kfault check [--no-mount]\n\nReports BTF, the override mechanisms that work (by loading and attaching a trivial\nprogram of each kind), the fault points of each failtype, cgroup v2 and the NRI socket.\nExits 1 when nothing can be injected.")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	rep := bpf.Preflight(!*noMount)
	rep.Checks = append(rep.Checks, plugin.NodeChecks()...)
	rep.WriteTo(stdout)
	if !rep.CanInject {
		return 1
	}
	return 0
}
