package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"

	"github.com/kfault/kfault/annotations"
)

const convertUsage = `usage: kfault convert [-o yaml|json] FILE|-

Reads a Chaos Mesh KernelChaos manifest and prints the kfault annotation value with
the same fault on standard output. Notes go to standard error: the KernelChaos
selector has no equivalent, because the annotation is placed on the pods you choose;
mode fixed-percent and random-max-percent become select: {percent: P} (a per-pod
draw), mode all needs no select, and for one and fixed a note gives the StatefulSet
ordinals form and the nearest percent.
"-" reads standard input.

  -o yaml   the value as YAML (default)
  -o json   the value as one line of JSON, handy for kubectl annotate

Exit status: 0 converted, 1 invalid manifest, 2 usage error.
`

func runConvert(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("convert", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, convertUsage) }
	format := fs.String("o", "yaml", "output format: yaml or json")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() != 1 || (*format != "yaml" && *format != "json") {
		fmt.Fprint(stderr, convertUsage)
		return 2
	}
	data, err := readInputFile(fs.Arg(0), stdin)
	if err != nil {
		fmt.Fprintf(stderr, "kfault convert: %v\n", err)
		return 2
	}
	if docs := annotations.SplitDocuments(data); len(docs) > 1 {
		fmt.Fprintf(stderr, "kfault convert: the input has %d documents; convert one KernelChaos at a time\n", len(docs))
		return 1
	}
	value, notes, err := annotations.ConvertKernelChaos(data)
	if err != nil {
		printFaultErrors(stderr, "kfault convert: ", err)
		return 1
	}
	if *format == "json" {
		faults, err := annotations.Parse(value)
		if err != nil { // cannot happen: ConvertKernelChaos returns parsed output
			fmt.Fprintf(stderr, "kfault convert: internal error: %v\n", err)
			return 1
		}
		value = annotations.EncodeJSON(faults) + "\n"
	}
	fmt.Fprint(stdout, value)
	for _, n := range notes {
		fmt.Fprintf(stderr, "note: %s\n", n)
	}
	if *format == "yaml" {
		fmt.Fprintf(stderr, "note: for example, in the pod (or pod template) metadata:\n  annotations:\n    %s: |\n", annotations.PodKey)
		for _, line := range strings.Split(strings.TrimSuffix(value, "\n"), "\n") {
			fmt.Fprintf(stderr, "      %s\n", line)
		}
	}
	return 0
}
