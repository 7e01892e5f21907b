package main

import (
	"errors"
	"flag"
	"fmt"
	"io"

	"github.com/kfault/kfault/plugin"
)

const disarmUsage = `usage: kfault disarm [--socket PATH] (--all | --resume | KEY)

  --all     the emergency stop: disarm every fault and arm no new ones (new
            containers start without their faults, even in strict mode) until
            kfault disarm --resume. The halt survives a plugin restart.
  --resume  end a halt: new containers get their faults again; running ones are
            re-armed at the plugin's next synchronization (restart or reconnect).
  KEY       one container, as kfault status lists it (the container ID for pods,
            namespace/ID for nerdctl/ctr containers). It stays disarmed while the
            container lives.

Stopping the plugin (or kill -9) also stops every fault at once: nothing is pinned.

Flags:
`

func runDisarm(args []string, _ io.Reader, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("disarm", flag.ContinueOnError)
	fs.SetOutput(stderr)
	sock := fs.String("socket", plugin.DefaultControlSocket, "the plugin's control socket `path`")
	all := fs.Bool("all", false, "disarm everything and halt arming")
	resume := fs.Bool("resume", false, "end a halt")
	fs.Usage = func() {
		fmt.Fprint(stderr, disarmUsage)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	var req plugin.DisarmRequest
	switch {
	case *all && !*resume && fs.NArg() == 0:
		req.All = true
	case *resume && !*all && fs.NArg() == 0:
		req.Resume = true
	case !*all && !*resume && fs.NArg() == 1:
		req.Key = fs.Arg(0)
	default:
		fs.Usage()
		return 2
	}
	reply, err := plugin.NewControlClient(*sock).Disarm(req)
	if err != nil {
		fmt.Fprintf(stderr, "kfault disarm: %v\n", err)
		return 1
	}
	switch {
	case req.All:
		fmt.Fprintf(stdout, "disarmed %d container(s); halted: nothing is armed until kfault disarm --resume\n", len(reply.Disarmed))
	case req.Resume:
		fmt.Fprintln(stdout, "resumed: new containers get their faults; running ones at the next synchronization")
	default:
		fmt.Fprintf(stdout, "disarmed %s\n", req.Key)
	}
	for _, k := range reply.Disarmed {
		if req.All {
			fmt.Fprintf(stdout, "  %s\n", k)
		}
	}
	return 0
}
