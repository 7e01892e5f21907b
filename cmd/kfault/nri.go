package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	nriapi "github.com/containerd/nri/pkg/api"

	"github.com/kfault/kfault/bpf"
	"github.com/kfault/kfault/plugin"
)

const nriUsage = `usage: kfault nri [flags]

Runs kfault's NRI plugin: containers whose annotations ask for kernel faults get
them armed at start and disarmed at stop. Containers started by nerdctl/ctr are
followed on containerd's event stream.

Three ways to run it:
  - by hand or as a DaemonSet: it connects to --socket and reconnects with
    backoff when containerd restarts;
  - pre-registered: installed as /opt/nri/plugins/10-kfault, containerd launches
    it with the connection on an inherited fd and the node config from
    /etc/nri/conf.d/10-kfault.conf (flags are not available then; logs go to
    /var/log/kfault.log).

The node config (--config, or the one NRI delivers) is YAML:
  allowedNamespaces: [...]       # default: none, so nothing is injected; "*": all ...
  deniedNamespaces: [kube-system] # ... except these
  mode: strict                   # strict | lenient
  stateDir: /var/lib/kfault
  containerdSocket: /run/containerd/containerd.sock
  metricsAddress: ""             # e.g. 127.0.0.1:9464 (loopback only unless
  metricsAllowNonLoopback: false #   this is true)
  controlSocket: /run/kfault/control.sock   # "off" disables kfault status/disarm
  events: {enabled: true, skipNamespaces: [k8s.io]}
  predicates: {default: allow, deny: [...], allow: [...]}
  quotas:                        # per namespace; default: 1/4 of each engine capacity
    default: {containers: 256, hooks: 16, chains: 63, frames: 8}
    namespaces: {chaos-a: {containers: 1000}}   # absent fields: the default's
Flags given explicitly win over the config file and the NRI-delivered config.

Flags:
`

// runNRI logs to stderr, or to --log-file; it has no other output.
func runNRI(args []string, _ io.Reader, _, stderr io.Writer) int {
	fs, fl := plugin.NewFlagSet("nri")
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, nriUsage)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() != 0 {
		fmt.Fprintf(stderr, "kfault nri: unexpected arguments %q\n", fs.Args())
		return 2
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })

	launched := os.Getenv(nriapi.PluginSocketEnvVar) != ""
	var logOut io.Writer = stderr
	if fl.LogFile == "" && launched {
		fl.LogFile = "/var/log/kfault.log"
	}
	if fl.LogFile != "" && fl.LogFile != "-" {
		f, err := os.OpenFile(fl.LogFile, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
		if err != nil {
			fmt.Fprintf(stderr, "kfault nri: log file: %v\n", err)
			return 1
		}
		defer f.Close()
		logOut = f
	}
	level := slog.LevelInfo
	if fl.Debug {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewJSONHandler(logOut, &slog.HandlerOptions{Level: level}))
	slog.SetDefault(log)

	// Config layers: defaults ← --config file ← NRI Configure ← explicit flags.
	var file plugin.Config
	if fl.ConfigFile != "" {
		data, err := os.ReadFile(fl.ConfigFile)
		if err != nil {
			log.Error("reading config", "error", err.Error())
			return 1
		}
		if file, err = plugin.ParseConfig(data); err != nil {
			log.Error("bad config file", "file", fl.ConfigFile, "error", err.Error())
			return 1
		}
	}
	var flags plugin.Config
	if set["state-dir"] {
		flags.StateDir = fl.StateDir
	}
	if set["lenient"] {
		flags.Mode = plugin.Strict
		if fl.Lenient {
			flags.Mode = plugin.Lenient
		}
	}
	if set["metrics-address"] {
		flags.MetricsAddress = fl.MetricsAddress
	}
	if set["containerd-socket"] {
		flags.ContainerdSocket = fl.ContainerdSocket
	}
	if set["control-socket"] {
		flags.ControlSocket = fl.ControlSocket
	}
	// Fail early on a bad file or flag rather than at the first Configure.
	if _, err := plugin.Resolve(file, flags); err != nil {
		log.Error("bad config", "error", err.Error())
		return 1
	}

	mech, err := bpf.ParseMechanism(fl.Mechanism)
	if err != nil {
		log.Error("bad flag", "error", err.Error())
		return 2
	}
	var engine plugin.Engine
	switch e, err := bpf.NewEngine(bpf.Options{Mechanism: mech, KeepIdle: fl.KeepIdle, Logger: log.With("component", "bpf")}); {
	case errors.Is(err, bpf.ErrMechanismUnavailable):
		// The kernel cannot override anything: stay registered and refuse each annotated
		// container with the reason, rather than let it run unfaulted with nobody told.
		log.Error("this kernel cannot inject faults: every annotated container will be refused (see kfault check)", "error", err.Error())
		engine = plugin.Unavailable{Err: err}
	case err != nil:
		log.Error("cannot start the BPF engine (see kfault check)", "error", err.Error())
		return 1
	default:
		engine = e
		if e.LSMOnly() {
			log.Warn("this kernel has no error injection: only LSM hooks can be failed (failtype alloc, function: security_*); other faults are refused (see kfault check)")
		}
		defer func() {
			if err := e.Close(); err != nil {
				log.Error("closing the BPF engine", "error", err.Error())
			}
		}()
	}

	p, err := plugin.New(plugin.Options{
		Engine:        engine,
		Logger:        log,
		File:          file,
		Flags:         flags,
		StartServices: plugin.Services,
	})
	if err != nil {
		log.Error("plugin", "error", err.Error())
		return 1
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	log.Info("kfault nri starting", "mechanism", plugin.MechanismName(engine), "launchedByRuntime", launched,
		"socket", fl.Socket, "name", fl.Name, "index", fl.Index)
	err = p.Run(ctx, plugin.RunOptions{SocketPath: fl.Socket, Name: fl.Name, Index: fl.Index})
	if err != nil {
		// Launched by the runtime and the connection is gone: exit, rules go with us,
		// and the restarted runtime launches a new instance that re-arms from the state.
		log.Error("kfault nri stopping", "error", err.Error())
		return 1
	}
	log.Info("kfault nri stopped")
	return 0
}
