package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"slices"

	"github.com/kfault/kfault/annotations"
	"github.com/kfault/kfault/bpf"
	"github.com/kfault/kfault/plugin"
)

const checkUsage = `usage: kfault check [--no-mount] [--spec FILE|-]

Reports BTF, the override mechanisms that work (by loading and attaching a trivial
program of each kind), the fault points of each failtype, cgroup v2 and the NRI socket.

  --no-mount   do not mount debugfs at /sys/kernel/debug when it is missing
  --spec FILE  also check each call-chain function of the faults in FILE (an annotation
               value, or Kubernetes manifests, read as kfault validate reads them; "-"
               reads standard input): a frame on a function that the compiler cloned
               (NAME.constprop.0, NAME.isra.0), or that is not in kallsyms, never fires

Exit status: 0 faults can be injected (and every call-chain function of --spec can be
framed), 1 otherwise, 2 usage error or a spec kfault cannot read.
`

// preflight is bpf.Preflight; tests replace it, as it loads BPF programs.
var preflight = bpf.Preflight

func runCheck(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("kfault check", flag.ContinueOnError)
	fs.SetOutput(stderr)
	noMount := fs.Bool("no-mount", false, "do not mount debugfs at /sys/kernel/debug when it is missing")
	specFile := fs.String("spec", "", "also check the call-chain functions of the faults in this file")
	fs.Usage = func() { fmt.Fprint(stderr, checkUsage) }
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() != 0 {
		fmt.Fprint(stderr, checkUsage)
		return 2
	}
	var chainFuncs []string
	if *specFile != "" {
		var err error
		if chainFuncs, err = specChainFunctions(*specFile, stdin); err != nil {
			fmt.Fprintf(stderr, "kfault check: --spec %s: %v\n(kfault validate %s says what is wrong)\n", *specFile, err, *specFile)
			return 2
		}
		if len(chainFuncs) == 0 {
			fmt.Fprintf(stderr, "kfault check: --spec %s: no fault has a callchain; no call-chain function to check\n", *specFile)
		}
	}
	rep := preflight(!*noMount, chainFuncs...)
	rep.Checks = append(rep.Checks, plugin.NodeChecks()...)
	rep.WriteTo(stdout)
	if !rep.CanInject || len(rep.BadFrames) > 0 {
		return 1
	}
	return 0
}

// specChainFunctions reads FILE as kfault validate does and returns the distinct call-chain
// function names of its faults, in order of appearance. A spec that does not parse is an error.
func specChainFunctions(name string, stdin io.Reader) ([]string, error) {
	in, err := readSpec(name, stdin)
	if err != nil {
		return nil, err
	}
	var faults []annotations.Fault
	if !in.manifest {
		if faults, err = annotations.Parse(in.value); err != nil {
			return nil, err
		}
	}
	if in.podsErr != nil {
		return nil, in.podsErr
	}
	for _, p := range in.pods {
		if len(p.Invalid) > 0 {
			return nil, fmt.Errorf("%s: %w", p.Name, p.Invalid)
		}
		for _, k := range slices.Sorted(maps.Keys(p.Annotations)) {
			if _, ours, err := annotations.ParseKey(k); err != nil {
				return nil, fmt.Errorf("%s: %w", p.Name, err)
			} else if !ours {
				continue
			}
			fs, err := annotations.Parse(p.Annotations[k])
			if err != nil {
				return nil, fmt.Errorf("%s: annotation %s: %w", p.Name, k, err)
			}
			faults = append(faults, fs...)
		}
	}
	var fns []string
	for _, f := range faults {
		for _, fr := range f.CallChain {
			if !slices.Contains(fns, fr.FuncName) {
				fns = append(fns, fr.FuncName)
			}
		}
	}
	return fns, nil
}
