package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"regexp"
	"sort"
	"strings"

	"github.com/kfault/kfault/annotations"
	"sigs.k8s.io/yaml"
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

const validateUsage = `usage: kfault validate FILE|-

Checks a kfault annotation value, or Kubernetes manifests (Pod, Deployment,
StatefulSet, DaemonSet, ReplicaSet, Job, CronJob, PodTemplate, List) carrying
faults.kfault.dev annotations, and prints what would be armed in each container.
"-" reads standard input.

Exit status: 0 valid, 1 invalid (the reasons go to standard error), 2 usage error.
`

func runValidate(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("validate", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, validateUsage) }
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
	data, err := readInputFile(fs.Arg(0), stdin)
	if err != nil {
		fmt.Fprintf(stderr, "kfault validate: %v\n", err)
		return 2
	}
	docs := splitYAMLDocuments(data)
	if len(docs) == 0 || !isKubeObject(docs[0]) {
		return validateValue(string(data), stdout, stderr)
	}
	return validateManifests(docs, stdout, stderr)
}

// validateValue checks a bare annotation value.
func validateValue(value string, stdout, stderr io.Writer) int {
	faults, err := annotations.Parse(value)
	if err != nil {
		printFaultErrors(stderr, "", err)
		return 1
	}
	fmt.Fprintf(stdout, "valid: %s; a container with this annotation gets:\n", countNoun(len(faults), "fault"))
	for _, f := range faults {
		fmt.Fprintf(stdout, "  - %s\n", f)
	}
	return 0
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

var yamlDocSeparator = regexp.MustCompile(`(?m)^---[ \t]*(#.*)?$`)

// splitYAMLDocuments splits a YAML stream at "---" lines and drops empty documents.
func splitYAMLDocuments(data []byte) [][]byte {
	var docs [][]byte
	for _, d := range yamlDocSeparator.Split(string(data), -1) {
		if isBlankYAML(d) {
			continue
		}
		docs = append(docs, []byte(d))
	}
	return docs
}

func isBlankYAML(s string) bool {
	for _, line := range strings.Split(s, "\n") {
		if t := strings.TrimSpace(line); t != "" && !strings.HasPrefix(t, "#") {
			return false
		}
	}
	return true
}

// isKubeObject reports whether doc is a Kubernetes object (apiVersion and kind).
func isKubeObject(doc []byte) bool {
	obj, err := decodeKubeObject(doc)
	if err != nil {
		return false
	}
	_, hasAPI := obj["apiVersion"].(string)
	_, hasKind := obj["kind"].(string)
	return hasAPI && hasKind
}

func decodeKubeObject(doc []byte) (map[string]any, error) {
	j, err := yaml.YAMLToJSON(doc)
	if err != nil {
		return nil, err
	}
	var obj map[string]any
	dec := json.NewDecoder(bytes.NewReader(j))
	dec.UseNumber()
	if err := dec.Decode(&obj); err != nil {
		return nil, fmt.Errorf("not an object")
	}
	return obj, nil
}

// manifestPod is a pod, or the pod template inside a workload.
type manifestPod struct {
	name        string // Kind/name
	annotations any    // metadata.annotations as decoded
	spec        map[string]any
	where       string // path of the template's metadata, for messages
}

// templates finds the pod templates in one Kubernetes object.
func manifestPods(obj map[string]any) ([]manifestPod, error) {
	kind, _ := obj["kind"].(string)
	name, _ := manifestField(obj, "metadata", "name").(string)
	if name == "" {
		name = "(unnamed)"
	}
	id := kind + "/" + name
	tmpl := func(path ...string) []manifestPod {
		t, _ := manifestField(obj, path...).(map[string]any)
		spec, _ := t["spec"].(map[string]any)
		return []manifestPod{{
			name:        id,
			annotations: manifestField(t, "metadata", "annotations"),
			spec:        spec,
			where:       strings.Join(append(path, "metadata", "annotations"), "."),
		}}
	}
	switch kind {
	case "Pod":
		spec, _ := obj["spec"].(map[string]any)
		return []manifestPod{{name: id, annotations: manifestField(obj, "metadata", "annotations"), spec: spec, where: "metadata.annotations"}}, nil
	case "Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "ReplicationController", "Job":
		return tmpl("spec", "template"), nil
	case "CronJob":
		return tmpl("spec", "jobTemplate", "spec", "template"), nil
	case "PodTemplate":
		return tmpl("template"), nil
	case "List":
		items, _ := obj["items"].([]any)
		var out []manifestPod
		for _, it := range items {
			if m, ok := it.(map[string]any); ok {
				ts, err := manifestPods(m)
				if err != nil {
					return nil, err
				}
				out = append(out, ts...)
			}
		}
		return out, nil
	case "KernelChaos":
		return nil, fmt.Errorf("%s is a Chaos Mesh KernelChaos; run 'kfault convert' on it to get the annotation", id)
	}
	return nil, nil
}

func manifestField(v any, path ...string) any {
	for _, p := range path {
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = m[p]
	}
	return v
}

func podContainerNames(spec map[string]any, field string) []string {
	list, _ := spec[field].([]any)
	var names []string
	for _, c := range list {
		if n, ok := manifestField(c, "name").(string); ok && n != "" {
			names = append(names, n)
		}
	}
	return names
}

func validateManifests(docs [][]byte, stdout, stderr io.Writer) int {
	var all []manifestPod
	failed := false
	for i, doc := range docs {
		obj, err := decodeKubeObject(doc)
		if err != nil {
			fmt.Fprintf(stderr, "document %d: not a Kubernetes object: %v\n", i+1, err)
			failed = true
			continue
		}
		ts, err := manifestPods(obj)
		if err != nil {
			fmt.Fprintln(stderr, err)
			failed = true
			continue
		}
		all = append(all, ts...)
	}
	if len(all) == 0 && !failed {
		fmt.Fprintln(stderr, "no Pod or pod template in the input; nothing to check")
		return 1
	}
	for _, t := range all {
		if !validateTemplate(t, stdout, stderr) {
			failed = true
		}
	}
	if failed {
		return 1
	}
	return 0
}

// validateTemplate checks one pod's kfault annotations and prints, per container,
// what would be armed. It reports whether everything was valid.
func validateTemplate(t manifestPod, stdout, stderr io.Writer) bool {
	ok := true
	fail := func(format string, args ...any) {
		fmt.Fprintf(stderr, t.name+": "+format+"\n", args...)
		ok = false
	}
	ann := map[string]string{}
	switch raw := t.annotations.(type) {
	case nil:
	case map[string]any:
		for k, v := range raw {
			s, isString := v.(string)
			if !isString {
				if _, ours, _ := annotations.ParseKey(k); ours {
					fail("%s[%q]: the value must be a string (quote it, or use a YAML block scalar: |)", t.where, k)
				}
				continue
			}
			ann[k] = s
		}
	default:
		fail("%s: must be a map of strings", t.where)
	}
	containers := podContainerNames(t.spec, "containers")
	inits := podContainerNames(t.spec, "initContainers")
	known := append(append([]string{}, containers...), inits...)

	keys := make([]string, 0, len(ann))
	for k := range ann {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parsed := map[string][]annotations.Fault{}
	for _, k := range keys {
		name, ours, err := annotations.ParseKey(k)
		if err != nil {
			fail("%v", err)
			continue
		}
		if !ours {
			continue
		}
		if name != "" && !nameIn(known, name) {
			fail("annotation %s: the pod has no container %q (containers: %s)", k, name, strings.Join(known, ", "))
		}
		faults, err := annotations.Parse(ann[k])
		if err != nil {
			printFaultErrors(stderr, t.name+": annotation "+k+": ", err)
			ok = false
			continue
		}
		parsed[k] = faults
	}
	if _, hasPod := ann[annotations.PodKey]; hasPod {
		if _, hasBare := ann[annotations.Key]; hasBare {
			fmt.Fprintf(stderr, "%s: note: %s never applies: %s takes precedence for every container\n", t.name, annotations.Key, annotations.PodKey)
		}
	}
	if !ok {
		return false
	}
	fmt.Fprintf(stdout, "%s:\n", t.name)
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
			fmt.Fprintf(stdout, "    - %s\n", f)
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

func nameIn(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func countNoun(n int, word string) string {
	if n == 1 {
		return "1 " + word
	}
	return fmt.Sprintf("%d %ss", n, word)
}
