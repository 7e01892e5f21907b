package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"strings"

	"github.com/cilium/ebpf/btf"

	"github.com/kfault/kfault/annotations"
	"github.com/kfault/kfault/bpf"
	"github.com/kfault/kfault/bpf/predicate"
)

// maxManifestBytes bounds what validate and convert read.
const maxManifestBytes = 8 << 20

// readInputFile reads FILE, or standard input for "-".
func readInputFile(name string, stdin io.Reader) ([]byte, error) {
	var r io.Reader = stdin
	if name != "-" {
		f, err := os.Open(name)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		r = f
	}
	data, err := io.ReadAll(io.LimitReader(r, maxManifestBytes+1))
	if err != nil {
		return nil, err
	}
	if len(data) > maxManifestBytes {
		return nil, fmt.Errorf("%s: more than %d bytes", name, maxManifestBytes)
	}
	return data, nil
}

// specInput is an input of kfault validate (and of kfault check --spec): a bare annotation value, or
// Kubernetes manifests and the pods found in them.
type specInput struct {
	manifest bool
	value    string                    // the annotation value, when not manifests
	pods     []annotations.ManifestPod // the manifests' pods and pod templates
	podsErr  error                     // the documents that hold none kfault can read (the others' pods are in pods)
}

// readSpec reads FILE, or standard input for "-", as an annotation value or as manifests.
func readSpec(name string, stdin io.Reader) (specInput, error) {
	data, err := readInputFile(name, stdin)
	if err != nil {
		return specInput{}, err
	}
	if !annotations.IsManifest(data) {
		return specInput{value: string(data)}, nil
	}
	pods, err := annotations.ManifestPods(data)
	return specInput{manifest: true, pods: pods, podsErr: err}, nil
}

const validateUsage = `usage: kfault validate [--btf FILE | --no-btf] FILE|-

Checks a kfault annotation value, or Kubernetes manifests (Pod, Deployment,
StatefulSet, DaemonSet, ReplicaSet, Job, CronJob, PodTemplate, List) carrying
faults.kfault.dev annotations, and prints what would be armed in each container;
for a fault with select, the rule that decides which pods get it (select.ordinals
outside a StatefulSet is an error: those pods have no ordinal in their name).
"-" reads standard input.

Call-chain predicates are compiled against kernel BTF, as the node does when it
arms them, so type errors and the predicate safety rules are reported here:
this machine's /sys/kernel/btf/vmlinux by default. A frame whose function is not
in that BTF is noted and its predicate checked for syntax only. Without BTF,
predicates are checked for syntax only, and a note on standard error says why.
Without --btf or --no-btf this machine stands for the node: a failtype whose fault
point its kernel cannot override is an error, with the reason and what works here,
as the node refuses it when the container is created.

  --btf FILE   compile predicates against this BTF file (raw BTF, such as a
               copy of a node's /sys/kernel/btf/vmlinux, or an ELF with BTF)
  --no-btf     check predicate syntax only

Exit status: 0 valid, 1 invalid (the reasons go to standard error), 2 usage error.
`

// kernelBTFPath is the running kernel's BTF, the default for predicate compiles.
var kernelBTFPath = "/sys/kernel/btf/vmlinux"

// refuseFailType is bpf.RefuseFailType; tests replace it, as it reads this machine's kernel.
var refuseFailType = bpf.RefuseFailType

// predicateChecker checks the call-chain predicates of parsed faults: compiled against a BTF
// spec, loaded on first use, or for syntax only when there is none.
type predicateChecker struct {
	path   string // the BTF file; "" with --no-btf
	spec   *btf.Spec
	why    string // why predicates are checked for syntax only ("" until known, or with a spec)
	loaded bool
	noted  bool // the syntax-only note was printed
	node   bool // this machine stands for the node: failtypes are checked against its kernel
}

// load reads the BTF file once. It returns nil when predicates get a syntax check only.
func (pc *predicateChecker) load() *btf.Spec {
	if pc.loaded {
		return pc.spec
	}
	pc.loaded = true
	if pc.path == "" {
		pc.why = "--no-btf"
		return nil
	}
	spec, err := btf.LoadSpec(pc.path)
	if err != nil {
		pc.why = fmt.Sprintf("no kernel BTF: %v; pass --btf FILE with a node's BTF, or --no-btf", err)
		return nil
	}
	pc.spec = spec
	return spec
}

// check returns one message per bad predicate, paths as the node reports them
// ("[1].callchain[0].predicate: column 20: ..."; no index for a single fault), and notes.
func (pc *predicateChecker) check(faults []annotations.Fault, stderr io.Writer) (errs, notes []string) {
	for i, f := range faults {
		index := ""
		if len(faults) > 1 {
			index = fmt.Sprintf("[%d].", i)
		}
		if pc.node && f.Function == "" {
			if err := refuseFailType(f.FailType); err != nil {
				errs = append(errs, index+"failtype: "+err.Error())
			}
		}
		for j, fr := range f.CallChain {
			if strings.TrimSpace(fr.Predicate) == "" {
				continue
			}
			spec := pc.load()
			if spec != nil {
				_, _, err := predicate.CompileFrame(spec, j, fr.FuncName, fr.Parameters, fr.Predicate, predicate.Options{ArgSource: predicate.Tracing})
				if !errors.Is(err, predicate.ErrNotInBTF) {
					if err != nil {
						errs = append(errs, index+err.Error())
					}
					continue
				}
				notes = append(notes, fmt.Sprintf("note: %scallchain[%d].funcname: %s is not in %s; its predicate was checked for syntax only", index, j, fr.FuncName, pc.path))
			} else if !pc.noted {
				pc.noted = true
				fmt.Fprintf(stderr, "kfault validate: predicates checked for syntax only, not compiled (%s)\n", pc.why)
			}
			if _, err := predicate.Parse(fr.Predicate); err != nil {
				errs = append(errs, fmt.Sprintf("%scallchain[%d].predicate: %v", index, j, err))
			}
		}
	}
	return errs, notes
}

func runValidate(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("validate", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, validateUsage) }
	btfFile := fs.String("btf", "", "compile predicates against this BTF file")
	noBTF := fs.Bool("no-btf", false, "check predicate syntax only")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() != 1 {
		fmt.Fprint(stderr, validateUsage)
		return 2
	}
	pc := &predicateChecker{path: kernelBTFPath, node: true}
	switch {
	case *noBTF && *btfFile != "":
		fmt.Fprintln(stderr, "kfault validate: --btf and --no-btf exclude each other")
		return 2
	case *noBTF:
		pc.path, pc.node = "", false
	case *btfFile != "":
		pc.node = false
		// A file asked for by name must load: a typo should not pass as "syntax only".
		pc.path = *btfFile
		if pc.load() == nil {
			fmt.Fprintf(stderr, "kfault validate: --btf %s: %s\n", *btfFile, strings.TrimPrefix(pc.why, "no kernel BTF: "))
			return 2
		}
	}
	in, err := readSpec(fs.Arg(0), stdin)
	if err != nil {
		fmt.Fprintf(stderr, "kfault validate: %v\n", err)
		return 2
	}
	if !in.manifest {
		return validateValue(in.value, pc, stdout, stderr)
	}
	return validateManifests(in.pods, in.podsErr, pc, stdout, stderr)
}

// validateValue checks a bare annotation value.
func validateValue(value string, pc *predicateChecker, stdout, stderr io.Writer) int {
	faults, err := annotations.Parse(value)
	if err != nil {
		printFaultErrors(stderr, "", err)
		return 1
	}
	errs, notes := pc.check(faults, stderr)
	for _, n := range notes {
		fmt.Fprintln(stderr, n)
	}
	if len(errs) > 0 {
		for _, e := range errs {
			fmt.Fprintln(stderr, e)
		}
		return 1
	}
	fmt.Fprintf(stdout, "valid: %s; a container with this annotation gets:\n", countNoun(len(faults), "fault"))
	for _, f := range faults {
		printFault(stdout, "  ", f)
	}
	return 0
}

// printFault writes one fault as a list item and, for a fault with select, the rule that
// decides which containers get it.
func printFault(w io.Writer, indent string, f annotations.Fault) {
	fmt.Fprintf(w, "%s- %s\n", indent, f)
	if f.Select != nil {
		fmt.Fprintf(w, "%s  select: %s\n", indent, f.Select.Explain())
	}
}

// ordinalsProblem says why the pods of a manifest object cannot use select.ordinals: only a
// StatefulSet's pods have a name ending in their ordinal. "" when they can, or when kfault
// cannot tell (a PodTemplate).
func ordinalsProblem(object string, faults []annotations.Fault) string {
	kind, name, _ := strings.Cut(object, "/")
	switch kind {
	case "StatefulSet", "PodTemplate":
		return ""
	case "Pod":
		if _, err := annotations.Decide(faults, annotations.Target{UID: "validate", Name: name}); err != nil {
			return err.Error()
		}
		return ""
	}
	for i, f := range faults {
		if f.Select != nil && len(f.Select.Ordinals) > 0 {
			path := "select.ordinals"
			if len(faults) > 1 {
				path = fmt.Sprintf("[%d].%s", i, path)
			}
			return fmt.Sprintf("%s: a %s's pods have generated names without a trailing -N ordinal, and kfault refuses them; ordinals select a StatefulSet's pods (use percent here)", path, kind)
		}
	}
	return ""
}

// printErrors writes one line per rejection, each prefixed.
func printFaultErrors(w io.Writer, prefix string, err error) {
	var es annotations.Errors
	if errors.As(err, &es) {
		for _, e := range es {
			fmt.Fprintf(w, "%s%s\n", prefix, e)
		}
		return
	}
	fmt.Fprintf(w, "%s%v\n", prefix, err)
}

// validateManifests checks the pods found in manifests; err is ManifestPods' error.
func validateManifests(pods []annotations.ManifestPod, err error, pc *predicateChecker, stdout, stderr io.Writer) int {
	failed := err != nil
	if err != nil {
		fmt.Fprintln(stderr, err)
	}
	if len(pods) == 0 && !failed {
		fmt.Fprintln(stderr, "no Pod or pod template in the input; nothing to check")
		return 1
	}
	for _, p := range pods {
		if !validatePod(p, pc, stdout, stderr) {
			failed = true
		}
	}
	if failed {
		return 1
	}
	return 0
}

// validatePod checks one pod's kfault annotations and prints, per container,
// what would be armed. It reports whether everything was valid.
func validatePod(p annotations.ManifestPod, pc *predicateChecker, stdout, stderr io.Writer) bool {
	ok := true
	fail := func(format string, args ...any) {
		fmt.Fprintf(stderr, p.Name+": "+format+"\n", args...)
		ok = false
	}
	for _, e := range p.Invalid {
		fail("%s", e)
	}
	ann := p.Annotations
	containers, inits := p.Containers, p.InitContainers
	known := append(append([]string{}, containers...), inits...)

	parsed := map[string][]annotations.Fault{}
	for _, k := range slices.Sorted(maps.Keys(ann)) {
		name, ours, err := annotations.ParseKey(k)
		if err != nil {
			fail("%v", err)
			continue
		}
		if !ours {
			continue
		}
		if name != "" && !slices.Contains(known, name) {
			fail("annotation %s: the pod has no container %q (containers: %s)", k, name, strings.Join(known, ", "))
		}
		faults, err := annotations.Parse(ann[k])
		if err != nil {
			printFaultErrors(stderr, p.Name+": annotation "+k+": ", err)
			ok = false
			continue
		}
		errs, notes := pc.check(faults, stderr)
		for _, n := range notes {
			fmt.Fprintf(stderr, "%s: annotation %s: %s\n", p.Name, k, n)
		}
		for _, e := range errs {
			fail("annotation %s: %s", k, e)
		}
		if problem := ordinalsProblem(p.Name, faults); problem != "" {
			fail("annotation %s: %s", k, problem)
			continue
		}
		parsed[k] = faults
	}
	if _, hasPod := ann[annotations.PodKey]; hasPod {
		if _, hasBare := ann[annotations.Key]; hasBare {
			fmt.Fprintf(stderr, "%s: note: %s never applies: %s takes precedence for every container\n", p.Name, annotations.Key, annotations.PodKey)
		}
	}
	if !ok {
		return false
	}
	fmt.Fprintf(stdout, "%s:\n", p.Name)
	if len(known) == 0 {
		fmt.Fprintln(stdout, "  (no containers listed)")
	}
	show := func(label, c string) {
		_, key, found := annotations.Effective(c, ann, nil)
		if !found {
			fmt.Fprintf(stdout, "  %s %s: nothing armed\n", label, c)
			return
		}
		fmt.Fprintf(stdout, "  %s %s (%s):\n", label, c, key)
		for _, f := range parsed[key] {
			printFault(stdout, "    ", f)
		}
	}
	for _, c := range inits {
		show("init container", c)
	}
	for _, c := range containers {
		show("container", c)
	}
	return true
}

func countNoun(n int, word string) string {
	if n == 1 {
		return "1 " + word
	}
	return fmt.Sprintf("%d %ss", n, word)
}
