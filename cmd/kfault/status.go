package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/kfault/kfault/plugin"
)

func runStatus(args []string, _ io.Reader, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("status", flag.ContinueOnError)
	fs.SetOutput(stderr)
	sock := fs.String("socket", plugin.DefaultControlSocket, "the plugin's control socket `path`")
	asJSON := fs.Bool("json", false, "print JSON")
	fs.Usage = func() {
		fmt.Fprint(stderr, "usage: kfault status [--socket PATH] [--json]\n\nLists every container with a fault: armed or not, \"not selected\" when the fault's select rule left it out,\nand how many faults were injected; then each namespace's use of the engine against its\nquotas (quotas in the node config).\nThe control socket is root only.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	st, err := plugin.NewControlClient(*sock).Status()
	if err != nil {
		fmt.Fprintf(stderr, "kfault status: %v (is kfault nri running? are you root?)\n", err)
		return 1
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(st); err != nil {
			return 1
		}
		return 0
	}
	writeStatus(stdout, st)
	return 0
}

func writeStatus(w io.Writer, st plugin.Status) {
	if st.Halted {
		fmt.Fprintln(w, "HALTED by kfault disarm --all: no faults are armed (kfault disarm --resume ends it)")
	}
	if len(st.Containers) == 0 {
		fmt.Fprintln(w, "no containers with faults")
		return
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "KEY\tNAMESPACE\tPOD\tCONTAINER\tSTATE\tFAULT\tINJECTED")
	for _, c := range st.Containers {
		state := "armed"
		switch {
		case len(c.Injected) == 0 && len(c.NotSelectedList) > 0:
			state = "not selected"
		case c.UserDisarmed:
			state = "disarmed (kfault disarm)"
		case !c.Armed:
			state = "disarmed"
		}
		pod := c.Pod
		if pod == "" {
			pod = "-"
		}
		for i, n := range c.Injected {
			fault := fmt.Sprintf("#%d", i)
			if i < len(c.FaultList) {
				fault = c.FaultList[i]
			}
			if c.Armed && i < len(c.Live) && !c.Live[i] {
				fault += " (duration over)"
			}
			key, ns, p, name, s := c.Key, c.Namespace, pod, c.Container, state
			if i > 0 { // one line per fault; the container's columns only on the first
				key, ns, p, name, s = "", "", "", "", ""
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%d\n", short(key), ns, p, name, s, fault, n)
		}
		// Faults that their select rule left out of this container: never armed here.
		for i, fault := range c.NotSelectedList {
			key, ns, p, name := c.Key, c.Namespace, pod, c.Container
			if i > 0 || len(c.Injected) > 0 {
				key, ns, p, name = "", "", "", ""
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t-\n", short(key), ns, p, name, "not selected", fault)
		}
	}
	tw.Flush()
	writeQuotas(w, st.Quotas)

	var recent []string
	for _, c := range st.Containers {
		for _, inj := range c.Recent {
			// The table above describes each fault in full; its index is enough here.
			fault := fmt.Sprintf("fault %d", c.FaultIndex(inj.Fault))
			nth := ""
			if inj.Seq > 0 {
				nth = fmt.Sprintf("  #%d", inj.Seq)
			}
			recent = append(recent, fmt.Sprintf("  %s  %s  %s%s  pid %d (%s)",
				inj.Time.Local().Format("15:04:05.000"), short(c.Key), fault, nth, inj.PID, inj.Comm))
		}
	}
	if len(recent) > 0 {
		fmt.Fprintln(w, "\nrecent sampled injections:")
		for _, l := range recent {
			fmt.Fprintln(w, l)
		}
	}
}

// writeQuotas prints each namespace's use of the engine against its quotas ("used/quota").
func writeQuotas(w io.Writer, quotas []plugin.NamespaceQuota) {
	if len(quotas) == 0 {
		return
	}
	fmt.Fprintln(w, "\nquotas (used/quota; node config key quotas.namespaces.<namespace>.<resource>):")
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	header := "NAMESPACE"
	for _, r := range quotas[0].Resources {
		header += "\t" + strings.ToUpper(r.Resource)
	}
	fmt.Fprintln(tw, header)
	for _, q := range quotas {
		line := q.Namespace
		for _, r := range q.Resources {
			line += fmt.Sprintf("\t%d/%d", r.Used, r.Quota)
		}
		fmt.Fprintln(tw, line)
	}
	tw.Flush()
}

// short abbreviates 64-hex container IDs in keys.
func short(key string) string {
	ns, id, found := strings.Cut(key, "/")
	if !found {
		id, ns = key, ""
	}
	if len(id) == 64 && strings.Trim(id, "0123456789abcdef") == "" {
		id = id[:12]
	}
	if found {
		return ns + "/" + id
	}
	return id
}
