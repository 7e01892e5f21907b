// Command kfault injects Linux kernel faults into the containers whose annotations ask for it.
//
// Each subcommand lives in its own <name>.go file and registers itself in init.
package main

import (
	"fmt"
	"os"
	"sort"
)

// subcommand is one `kfault <name>` entry point.
type subcommand struct {
	summary string
	run     func(args []string) int // returns the process exit code
}

var subcommands = map[string]subcommand{}

func register(name, summary string, run func(args []string) int) {
	if _, dup := subcommands[name]; dup {
		panic("kfault: subcommand registered twice: " + name)
	}
	subcommands[name] = subcommand{summary: summary, run: run}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: kfault <command> [flags]\n\ncommands:")
	names := make([]string, 0, len(subcommands))
	for n := range subcommands {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(os.Stderr, "  %-10s %s\n", n, subcommands[n].summary)
	}
	fmt.Fprintln(os.Stderr, "\nRun 'kfault <command> -h' for a command's flags.")
}

func main() {
	// containerd launches a pre-registered plugin (/opt/nri/plugins/10-kfault) with no arguments
	// and the connection in NRI_PLUGIN_SOCKET: that is `kfault nri`.
	if len(os.Args) == 1 && os.Getenv("NRI_PLUGIN_SOCKET") != "" {
		os.Args = append(os.Args, "nri")
	}
	if len(os.Args) < 2 || os.Args[1] == "-h" || os.Args[1] == "--help" || os.Args[1] == "help" {
		usage()
		if len(os.Args) < 2 {
			os.Exit(2)
		}
		return
	}
	cmd, ok := subcommands[os.Args[1]]
	if !ok {
		fmt.Fprintf(os.Stderr, "kfault: unknown command %q\n\n", os.Args[1])
		usage()
		os.Exit(2)
	}
	os.Exit(cmd.run(os.Args[2:]))
}
