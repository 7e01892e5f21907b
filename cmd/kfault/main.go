// Command kfault injects Linux kernel faults into the containers whose annotations ask for it.
//
// Every subcommand is listed in the commands table below and lives in its own <name>.go file.
package main

import (
	"fmt"
	"io"
	"os"
)

// command is one `kfault <name>` entry point. run gets the arguments after the name and
// returns the process exit code: 0 done, 1 failed, 2 usage error.
type command struct {
	name    string
	summary string
	run     func(args []string, stdin io.Reader, stdout, stderr io.Writer) int
}

// commands is every kfault subcommand, in the order usage lists them.
var commands = []command{
	{"check", "preflight report: can this kernel inject faults, and how", runCheck},
	{"convert", "turn a Chaos Mesh KernelChaos manifest into a kfault annotation", runConvert},
	{"disarm", "disarm one container's faults, or all of them (--all, the emergency stop)", runDisarm},
	{"inject", "inject faults into one cgroup until interrupted or done (like bcc inject.py)", runInject},
	{"nri", "run the NRI plugin (by hand, as a DaemonSet, or launched by containerd)", runNRI},
	{"status", "list the armed faults and their counts (from the running plugin)", runStatus},
	{"validate", "check an annotation value or a pod manifest and print what would be armed", runValidate},
	{"version", "print the kfault version", runVersion},
}

// lookup finds the subcommand called name.
func lookup(name string) (command, bool) {
	for _, c := range commands {
		if c.name == name {
			return c, true
		}
	}
	return command{}, false
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: kfault <command> [flags]\n\ncommands:")
	for _, c := range commands {
		fmt.Fprintf(w, "  %-10s %s\n", c.name, c.summary)
	}
	fmt.Fprintln(w, "\nRun 'kfault <command> -h' for a command's flags.")
}

func main() {
	// containerd launches a pre-registered plugin (/opt/nri/plugins/10-kfault) with no arguments
	// and the connection in NRI_PLUGIN_SOCKET: that is `kfault nri`.
	if len(os.Args) == 1 && os.Getenv("NRI_PLUGIN_SOCKET") != "" {
		os.Args = append(os.Args, "nri")
	}
	if len(os.Args) < 2 || os.Args[1] == "-h" || os.Args[1] == "--help" || os.Args[1] == "help" {
		usage(os.Stderr)
		if len(os.Args) < 2 {
			os.Exit(2)
		}
		return
	}
	cmd, ok := lookup(os.Args[1])
	if !ok {
		fmt.Fprintf(os.Stderr, "kfault: unknown command %q\n\n", os.Args[1])
		usage(os.Stderr)
		os.Exit(2)
	}
	os.Exit(cmd.run(os.Args[2:], os.Stdin, os.Stdout, os.Stderr))
}
