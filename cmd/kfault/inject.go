package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/kfault/kfault/annotations"
	"github.com/kfault/kfault/bpf"
	"github.com/kfault/kfault/plugin"
)

func runInject(args []string, _ io.Reader, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("kfault inject", flag.ContinueOnError)
	fs.SetOutput(stderr)
	failtype := fs.String("failtype", "", "slab|page|bio|alloc (or 0|1|2|3): the fault point (KernelChaos's 0-2) or the LSM allocation hooks (3) to fail")
	function := fs.String("function", "", "instead of --failtype: a function on /sys/kernel/debug/error_injection/list (e.g. __x64_sys_openat), or an LSM hook (security_*, e.g. security_file_open)")
	errno := fs.String("errno", "", "with --function: the errno to return, by name (EACCES) or number")
	spec := fs.String("spec", "", "instead of --failtype/--function: a file holding an annotation value (YAML or JSON, one fault or a list)")
	cgroup := fs.String("cgroup", "", "target: a cgroup v2 directory; its whole subtree is affected")
	pid := fs.Int("pid", 0, "target: the cgroup v2 cgroup of this process (and its subtree)")
	probability := fs.Float64("probability", 100, "percent of the calls to fail, in (0, 100]; fractions allowed")
	times := fs.Uint64("times", 0, "stop after this many injected faults (0: unlimited)")
	duration := fs.Duration("duration", 0, "stop after this long (0: until interrupted)")
	mechanism := fs.String("mechanism", "auto", "auto|fmod_ret|kprobe")
	verbose := fs.Bool("v", false, "log what the engine does")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: kfault inject (--failtype T | --function F --errno E | --spec FILE) (--cgroup DIR | --pid PID) [flags]\n\nArms the fault(s) on the target cgroup subtree, runs until interrupted (SIGINT/SIGTERM) or\ndone (every fault reached its --times, or --duration elapsed), then prints how many faults\nwere injected. Example:\n  kfault inject --failtype slab --cgroup /sys/fs/cgroup/victim --probability 10 --times 100")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "kfault inject: unexpected arguments %q\n", fs.Args())
		return 2
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })

	faults, err := injectFaults(*failtype, *function, *errno, *spec, *probability, *times, *duration, set)
	if err != nil {
		fmt.Fprintln(stderr, "kfault inject:", err)
		return 2
	}

	var target bpf.Target
	switch {
	case *cgroup != "" && *pid != 0:
		fmt.Fprintln(stderr, "kfault inject: give --cgroup or --pid, not both")
		return 2
	case *cgroup != "":
		target, err = bpf.TargetFromPath(*cgroup)
	case *pid != 0:
		target, err = bpf.TargetFromPID(*pid)
	default:
		fmt.Fprintln(stderr, "kfault inject: a target is required: --cgroup DIR or --pid PID")
		return 2
	}
	if err == nil {
		err = checkInjectTarget(target, *pid)
	}
	if err != nil {
		fmt.Fprintln(stderr, "kfault inject:", err)
		return 2
	}

	mech, err := bpf.ParseMechanism(*mechanism)
	if err != nil {
		fmt.Fprintln(stderr, "kfault inject:", err)
		return 2
	}
	level := slog.LevelWarn
	if *verbose {
		level = slog.LevelInfo
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	engine, err := bpf.NewEngine(bpf.Options{Mechanism: mech, Logger: log})
	if err != nil {
		fmt.Fprintln(stderr, "kfault inject:", err, "\n(run `kfault check` for details)")
		return 1
	}
	defer engine.Close()
	// As the plugin does with its default node config: bio faults never fail the devices
	// holding the node's /, containerd's and kubelet's roots and kfault's state.
	// Only bio faults need them (and only then are missing paths worth a warning).
	if slices.ContainsFunc(faults, isBioFault) {
		protect, err := plugin.ResolveProtected(append(slices.Clone(plugin.DefaultProtectPaths), plugin.DefaultStateDir), nil, log)
		if err == nil {
			err = engine.SetProtectedDevices(protect)
		}
		if err != nil {
			fmt.Fprintln(stderr, "kfault inject: protected devices:", err)
			return 1
		}
	}

	const key = "inject"
	plan, err := engine.Prepare(faults)
	if err == nil {
		// No exec boundary: the cgroup's processes already run, and every task in it is
		// faulted, whether or not it execs again (docs/runtimes.md).
		err = engine.Arm(key, target, plan, bpf.ArmOptions{})
	}
	if err != nil {
		fmt.Fprintln(stderr, "kfault inject:", err)
		return 1
	}
	for _, f := range faults {
		// The description is worded for annotations; here the end is the command's, not a container's.
		desc := strings.Replace(f.String(), "until the container stops", "until interrupted", 1)
		fmt.Fprintf(stderr, "kfault inject: armed on %s with %s: %s\n", target, engine.Mechanism(), desc)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	why := waitInjectDone(ctx, engine, key, faults, stderr)

	counts, cerr := engine.Counts(key)
	if err := engine.Disarm(key); err != nil {
		fmt.Fprintln(stderr, "kfault inject: disarm:", err)
	}
	if cerr != nil {
		fmt.Fprintln(stderr, "kfault inject:", cerr)
		return 1
	}
	var total uint64
	for _, c := range counts {
		total += c
	}
	if len(faults) == 1 {
		fmt.Fprintf(stdout, "injected %d faults (%s)\n", total, why)
	} else {
		parts := make([]string, len(counts))
		for i, c := range counts {
			parts[i] = strconv.FormatUint(c, 10)
		}
		fmt.Fprintf(stdout, "injected %d faults (per fault: %s) (%s)\n", total, strings.Join(parts, ", "), why)
	}
	return 0
}

// checkInjectTarget refuses the cgroup2 root (level 0): every process of the node is
// below it, so a fault there is a fault on the whole node. pid is --pid, or 0 for
// --cgroup. The plugin refuses it too (plugin.resolveTarget).
func checkInjectTarget(t bpf.Target, pid int) error {
	if t.Level > 0 {
		return nil
	}
	if pid != 0 {
		return fmt.Errorf("pid %d is in the root cgroup %s: a fault there would hit every process on the node; "+
			"move the process to a cgroup of its own, or give --cgroup with a cgroup below the root", pid, t.Path)
	}
	return fmt.Errorf("%s is the root cgroup: a fault there would hit every process on the node; give a cgroup below it", t.Path)
}

// injectFaults builds the fault list from the flags (through annotations.FromFields, so that
// they get an annotation's validation and defaults), or reads it from --spec.
func injectFaults(failtype, function, errno, specFile string, probability float64, times uint64, duration time.Duration, set map[string]bool) ([]annotations.Fault, error) {
	n := 0
	for _, s := range []string{failtype, function, specFile} {
		if s != "" {
			n++
		}
	}
	if n != 1 {
		return nil, errors.New("give exactly one of --failtype, --function or --spec")
	}
	if specFile != "" {
		for _, f := range []string{"errno", "probability", "times", "duration"} {
			if set[f] {
				return nil, fmt.Errorf("--%s cannot be combined with --spec: put it in the spec", f)
			}
		}
		data, err := os.ReadFile(specFile)
		if err != nil {
			return nil, err
		}
		faults, err := annotations.Parse(string(data))
		if err != nil {
			return nil, fmt.Errorf("%s: %w", specFile, err)
		}
		return faults, nil
	}
	fields := map[string]any{"probability": json.Number(strconv.FormatFloat(probability, 'g', -1, 64))}
	if failtype != "" {
		if errno != "" {
			return nil, errors.New("--errno goes with --function; a failtype has its own return value")
		}
		fields["failtype"] = failtype
	} else {
		if errno == "" {
			return nil, errors.New("--function needs --errno (e.g. --errno EACCES)")
		}
		fields["function"], fields["errno"] = function, errno
	}
	if times > 0 {
		fields["times"] = json.Number(strconv.FormatUint(times, 10))
	}
	if duration > 0 {
		fields["duration"] = duration.String()
	}
	f, err := annotations.FromFields(fields)
	if err != nil {
		return nil, err
	}
	return []annotations.Fault{f}, nil
}

// waitInjectDone waits for a signal, for every fault to have used its times budget, or for
// every fault's duration to have elapsed, and says which. Meanwhile it prints the sampled
// injections (each fault's first 8, then every 1024th) to w.
func waitInjectDone(ctx context.Context, e *bpf.Engine, key string, faults []annotations.Fault, w io.Writer) string {
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	samples := e.Injections()
	// Once done, samples of the last injections may still be on their way from the ring
	// buffer: keep printing them for a moment (drain) before saying why.
	var finished string
	var drain <-chan time.Time
	for {
		select {
		case <-ctx.Done():
			return "interrupted"
		case inj, ok := <-samples:
			if !ok {
				samples = nil
				if finished != "" {
					return finished
				}
			} else if inj.Key == key {
				printSample(w, inj)
			}
			continue
		case <-drain:
			return finished
		case <-tick.C:
		}
		if finished != "" {
			continue
		}
		counts, err := e.Counts(key)
		if err != nil {
			return err.Error()
		}
		active, err := e.Active(key)
		if err != nil {
			return err.Error()
		}
		done, byTimes := true, true
		for i, f := range faults {
			switch {
			case f.Times > 0 && counts[i] >= f.Times:
				// budget used
			case !active[i]:
				byTimes = false // duration elapsed
			default:
				done = false
			}
		}
		if done {
			finished = "duration elapsed"
			if byTimes {
				finished = "times reached"
			}
			drain = time.After(200 * time.Millisecond)
		}
	}
}

// printSample prints one sampled injection for kfault inject.
func printSample(w io.Writer, inj bpf.Injection) {
	fmt.Fprintf(w, "kfault inject: %s  fault %d (%s) #%d hit pid %d (%s) in process %d: returned %d\n",
		inj.Time.Local().Format("15:04:05.000"), inj.Fault, inj.Function, inj.Seq, inj.PID, inj.Comm, inj.TGID, inj.Retval)
}

// isBioFault tells whether f fails bios (failtype bio, or should_fail_bio named as a function).
func isBioFault(f annotations.Fault) bool {
	bio := annotations.FailPoints[annotations.Bio].Functions[0]
	return f.Function == bio || f.Function == "" && f.FailType == annotations.Bio
}
