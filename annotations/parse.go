package annotations

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"path"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	yamlv3 "go.yaml.in/yaml/v3"
	"sigs.k8s.io/yaml"
)

// Limits on one annotation value.
const (
	// MaxFaults is the largest number of faults in one annotation value.
	MaxFaults = 16
	// MaxFrames is the largest number of frames in one callchain.
	MaxFrames = 8
	// MaxValueBytes is the largest annotation value accepted.
	MaxValueBytes = 64 << 10
	// MaxTextBytes bounds parameters and predicate strings.
	MaxTextBytes = 1024
	// MaxNameBytes bounds funcname and function (kernel KSYM_NAME_LEN is larger,
	// but no error-injectable or traceable function comes near this).
	MaxNameBytes = 128
	// MaxHeaders bounds the entries of headers, and MaxHeaderBytes each entry
	// (accepted for KernelChaos compatibility, unused: real header paths are short).
	MaxHeaders     = 32
	MaxHeaderBytes = 256
	// MaxDevices bounds the entries of devices (block devices a bio fault is limited to).
	MaxDevices = 8
	// DefaultProbability applies when probability is absent.
	DefaultProbability = 100.0
)

// Field names of a fault object and of a callchain frame, in the order they are
// checked and printed.
var (
	faultFields = []string{"failtype", "function", "errno", "callchain", "headers", "devices", "probability", "times", "duration", "select"}
	frameFields = []string{"funcname", "parameters", "predicate"}
)

var identRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// Parse reads an annotation value: YAML or JSON, one fault object or a list of them.
// It applies defaults (probability 100) and validates every field. On failure the
// error is an Errors value whose entries name the field path, the value and the
// reason, e.g. `[1].callchain[0].funcname: must not be empty`.
//
// Predicates are only checked to be non-empty printable text here, and parameters
// only for the shape of a C parameter list; bpf/ checks both against kernel BTF.
func Parse(value string) ([]Fault, error) {
	if strings.TrimSpace(value) == "" {
		return nil, Errors{{Reason: "empty annotation value: want a fault object or a list of them"}}
	}
	if len(value) > MaxValueBytes {
		return nil, Errors{{Reason: fmt.Sprintf("annotation value is %d bytes, more than the limit of %d", len(value), MaxValueBytes)}}
	}
	// The YAML decoder reads only the first document: more would silently drop faults.
	if n := len(SplitDocuments([]byte(value))); n > 1 {
		return nil, Errors{{Reason: fmt.Sprintf("%d YAML documents (separated by ---); write one fault object or a list of them", n)}}
	}
	if errs := screen(value); len(errs) > 0 {
		return nil, errs
	}
	doc, err := decode([]byte(value))
	if err != nil {
		return nil, Errors{{Reason: err.Error()}}
	}
	var p parser
	var faults []Fault
	switch d := doc.(type) {
	case nil:
		return nil, Errors{{Reason: "empty annotation value: want a fault object or a list of them"}}
	case map[string]any:
		faults = []Fault{p.fault("", d)}
	case []any:
		switch {
		case len(d) == 0:
			p.errorf("", "empty list: want at least one fault")
		case len(d) > MaxFaults:
			p.errorf("", "%d faults in one annotation, at most %d allowed", len(d), MaxFaults)
		}
		if len(d) > MaxFaults {
			break
		}
		for i, item := range d {
			m, ok := item.(map[string]any)
			if !ok {
				p.errorf(indexPath("", i), "%s, want a fault object", describe(item))
				continue
			}
			faults = append(faults, p.fault(indexPath("", i), m))
		}
	default:
		p.errorf("", "%s, want a fault object or a list of them", describe(doc))
	}
	if len(p.errs) > 0 {
		return nil, p.errs
	}
	return faults, nil
}

// FromFields builds one fault from a fault object that is already decoded (from command-line
// flags, or a converted manifest), with Parse's defaults and validation and no text in
// between. Values have decoded types: string, json.Number, bool, []any, map[string]any.
// Error paths are relative to the fault, e.g. "probability".
func FromFields(fields map[string]any) (Fault, error) {
	var p parser
	f := p.fault("", fields)
	if len(p.errs) > 0 {
		return Fault{}, p.errs
	}
	return f, nil
}

// errAnchors is the reason given for a YAML anchor or alias.
const errAnchors = "YAML anchors and aliases (&name, *name) are not allowed in a kfault annotation" +
	" (quote a value that starts with & or *, e.g. predicate: '*p == 0')"

// screen reads value with the YAML parser's node tree, before decode, and refuses
// what decode would expand or silently misread:
//
//   - anchors and aliases: decode expands every alias, so a few KB of "*a, *a, ..."
//     pointing at a long string become hundreds of MB. The node tree keeps an alias
//     as one node, so finding them costs nothing.
//   - anything after the first value: a second JSON value or YAML document would be
//     dropped without a word by decode, which reads the first one only.
//   - integers with a leading zero, which YAML 1.1 reads as octal (times: 010 is 8),
//     and .nan/.inf, which have no JSON form.
//
// The node tree comes from go.yaml.in/yaml/v3; decode uses v2 (through
// sigs.k8s.io/yaml). Both are ports of libyaml and scan anchors and aliases alike;
// FuzzParse checks that nothing screen lets through expands when decoded.
func screen(value string) Errors {
	dec := yamlv3.NewDecoder(strings.NewReader(value))
	var s screener
	docs := 0
	for {
		var doc yamlv3.Node
		err := dec.Decode(&doc)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			msg := err.Error()
			if strings.Contains(msg, "unknown anchor") {
				return Errors{{Reason: errAnchors}} // an alias without its anchor: *p unquoted
			}
			if docs > 0 {
				return Errors{{Reason: "more text after the first JSON/YAML value: write one fault object or a list of them ([{...}, {...}])"}}
			}
			return Errors{{Reason: "not valid YAML or JSON: " + msg}}
		}
		if !emptyDocument(&doc) {
			if docs++; docs > 1 {
				return Errors{{Reason: "more than one YAML document: write one fault object or a list of them ([{...}, {...}])"}}
			}
		}
		if s.walk(&doc, "", false); s.anchor {
			return s.errs
		}
	}
	return s.errs
}

// emptyDocument reports whether a document holds nothing (only comments, or an
// empty document between two --- lines).
func emptyDocument(doc *yamlv3.Node) bool {
	if len(doc.Content) == 0 {
		return true
	}
	n := doc.Content[0]
	return n.Kind == yamlv3.ScalarNode && n.Value == "" && n.Style == 0 && n.Anchor == "" && n.ShortTag() == "!!null"
}

type screener struct {
	errs   Errors
	anchor bool // an anchor or alias was found: errs holds only that
}

var (
	// leadingZeroRE matches, after YAML 1.1 drops the underscores, the integers it
	// reads as octal (010 is 8; 08 and 09, not octal, come out as floats 8 and 9).
	leadingZeroRE = regexp.MustCompile(`^[-+]?0[0-9]+$`)
	// nonFiniteRE matches YAML 1.1's spellings of NaN and the infinities.
	nonFiniteRE = regexp.MustCompile(`^(\.(nan|NaN|NAN)|[-+]?\.(inf|Inf|INF))$`)
)

// walk checks the node n at path; key says n is a mapping key (only anchors count).
func (s *screener) walk(n *yamlv3.Node, path string, key bool) {
	if s.anchor {
		return
	}
	if n.Kind == yamlv3.AliasNode || n.Anchor != "" {
		s.errs = Errors{{Path: path, Reason: errAnchors}}
		s.anchor = true
		return
	}
	switch n.Kind {
	case yamlv3.DocumentNode:
		for _, c := range n.Content {
			s.walk(c, path, false)
		}
	case yamlv3.SequenceNode:
		for i, c := range n.Content {
			s.walk(c, indexPath(path, i), false)
		}
	case yamlv3.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			s.walk(k, path, true)
			name := "?"
			if k.Kind == yamlv3.ScalarNode {
				name = k.Value
			}
			s.walk(v, joinPath(path, name), false)
		}
	case yamlv3.ScalarNode:
		// Only plain scalars (and explicitly tagged ones, like !!int "010") are read
		// as numbers; a quoted "010" stays a string.
		quoted := n.Style&(yamlv3.SingleQuotedStyle|yamlv3.DoubleQuotedStyle|yamlv3.LiteralStyle|yamlv3.FoldedStyle) != 0
		if key || (quoted && (n.Style&yamlv3.TaggedStyle == 0 || n.ShortTag() == "!!str")) {
			return
		}
		switch {
		case leadingZeroRE.MatchString(strings.ReplaceAll(n.Value, "_", "")):
			s.errs = append(s.errs, &FieldError{Path: path, Reason: leadingZeroReason(n.Value)})
		case nonFiniteRE.MatchString(n.Value):
			s.errs = append(s.errs, &FieldError{Path: path, Reason: fmt.Sprintf("%s is not a finite number", n.Value)})
		}
	}
}

// leadingZeroReason explains the refusal of an integer written with a leading zero.
func leadingZeroReason(v string) string {
	if len(v) > 24 {
		return fmt.Sprintf("%s has a leading zero (YAML reads 010 as octal 8); write it without leading zeros", show(v))
	}
	digits, sign := strings.ReplaceAll(v, "_", ""), ""
	if digits[0] == '-' {
		sign = "-"
	}
	if digits = strings.TrimLeft(strings.TrimLeft(digits, "-+"), "0"); digits == "" {
		digits, sign = "0", ""
	}
	return fmt.Sprintf("%s has a leading zero (YAML reads 010 as octal 8); write it without leading zeros (%s%s)", v, sign, digits)
}

// maxDecodedBytes bounds the JSON that decode makes of a value. Without aliases
// (refused by screen) JSON is at most a few times the YAML text; this is the second
// line of defence, should an alias get past screen.
const maxDecodedBytes = 16 * MaxValueBytes

// decode turns YAML or JSON text into plain values (map[string]any, []any, string,
// json.Number, bool, nil). Duplicate keys are rejected.
func decode(text []byte) (any, error) {
	j, err := yaml.YAMLToJSONStrict(text)
	if err != nil {
		msg := strings.TrimPrefix(err.Error(), "error converting YAML to JSON: ")
		return nil, fmt.Errorf("not valid YAML or JSON: %s", msg)
	}
	if len(j) > maxDecodedBytes {
		return nil, fmt.Errorf("annotation value expands to %d bytes, more than the limit of %d", len(j), maxDecodedBytes)
	}
	dec := json.NewDecoder(bytes.NewReader(j))
	dec.UseNumber()
	var doc any
	if err := dec.Decode(&doc); err != nil {
		return nil, fmt.Errorf("not valid YAML or JSON: %v", err)
	}
	return doc, nil
}

type parser struct {
	errs Errors
}

func (p *parser) errorf(path, format string, args ...any) {
	p.errs = append(p.errs, &FieldError{Path: path, Reason: fmt.Sprintf(format, args...)})
}

// unknownFields reports keys of m not in known, sorted, with a suggestion when one
// is close.
func (p *parser) unknownFields(prefix string, m map[string]any, known []string, hints map[string]string) {
	var unknown []string
	for k := range m {
		if !contains(known, k) {
			unknown = append(unknown, k)
		}
	}
	sort.Strings(unknown)
	for _, k := range unknown {
		path := joinPath(prefix, k)
		if hint, ok := hints[k]; ok {
			p.errorf(path, "unknown field: %s", hint)
		} else if s := suggest(k, known); s != "" {
			p.errorf(path, "unknown field (did you mean %q?)", s)
		} else {
			p.errorf(path, "unknown field (known fields: %s)", strings.Join(known, ", "))
		}
	}
}

var faultHints = map[string]string{
	"failKernRequest": "paste the contents of failKernRequest, not the block itself (or run 'kfault convert' on the KernelChaos manifest)",
	"apiVersion":      "this looks like a Kubernetes manifest; the annotation value is a fault object (run 'kfault validate' on the manifest)",
	"kind":            "this looks like a Kubernetes manifest; the annotation value is a fault object (run 'kfault validate' on the manifest)",
	"mode":            "KernelChaos's mode and value become select: {percent: P} or select: {ordinals: [N, ...]} (run 'kfault convert' on the KernelChaos manifest)",
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// present returns m[k] and whether it is set to something other than null.
func present(m map[string]any, k string) (any, bool) {
	v, ok := m[k]
	return v, ok && v != nil
}

func (p *parser) fault(prefix string, m map[string]any) Fault {
	f := Fault{Probability: DefaultProbability}
	p.unknownFields(prefix, m, faultFields, faultHints)

	ftRaw, hasFT := present(m, "failtype")
	if hasFT {
		f.FailType = p.failType(joinPath(prefix, "failtype"), ftRaw)
	}
	fnRaw, hasFn := present(m, "function")
	if hasFn {
		f.Function = p.name(joinPath(prefix, "function"), fnRaw, "the error-injectable kernel function to fail")
	}
	errRaw, hasErrno := present(m, "errno")
	if hasErrno {
		f.Errno = p.errno(joinPath(prefix, "errno"), errRaw)
	}
	switch {
	case hasFT && hasFn:
		p.errorf(joinPath(prefix, "function"), "cannot be combined with failtype (%s); set one of them", describeFT(ftRaw))
	case !hasFT && !hasFn:
		p.errorf(joinPath(prefix, "failtype"), "missing: set failtype (0|1|2|3 or slab|page|bio|alloc), or function with errno")
	case hasFn && !hasErrno:
		p.errorf(joinPath(prefix, "errno"), "missing: function %s needs an errno to return (a name like EACCES, or a number)", show(fmt.Sprint(fnRaw)))
	case hasFT && hasErrno:
		p.errorf(joinPath(prefix, "errno"), "only valid with function; failtype returns a fixed value (slab -ENOMEM, page true, bio -EIO, alloc -ENOMEM)")
	}
	if !hasFn {
		f.Errno = 0
	}
	if hasFn {
		f.FailType = 0
	}

	if v, ok := present(m, "callchain"); ok {
		f.CallChain = p.callchain(joinPath(prefix, "callchain"), v)
	}
	if v, ok := present(m, "headers"); ok {
		f.Headers = p.headers(joinPath(prefix, "headers"), v)
	}
	if v, ok := present(m, "devices"); ok {
		path := joinPath(prefix, "devices")
		if hasFn && f.Function != FailPoints[Bio].Functions[0] || !hasFn && hasFT && f.FailType != Bio {
			p.errorf(path, "only valid on bio faults (failtype 2 or function %s)", FailPoints[Bio].Functions[0])
		} else {
			f.Devices = p.devices(path, v)
		}
	}
	if v, ok := present(m, "probability"); ok {
		f.Probability = p.percent(joinPath(prefix, "probability"), v)
	}
	if v, ok := present(m, "times"); ok {
		f.Times = p.times(joinPath(prefix, "times"), v)
	}
	if v, ok := present(m, "duration"); ok {
		f.Duration = p.duration(joinPath(prefix, "duration"), v)
	}
	if v, ok := present(m, "select"); ok {
		f.Select = p.selection(joinPath(prefix, "select"), v)
	}
	return f
}

func describeFT(v any) string {
	if s, ok := v.(string); ok {
		return "failtype " + show(s)
	}
	return fmt.Sprintf("failtype %v", v)
}

// failTypeNames maps accepted names (lower case) to fail types: the KernelChaos
// numbers as text, kfault's names, and bcc inject.py's mode names.
var failTypeNames = map[string]FailType{
	"0": Slab, "slab": Slab, "kmalloc": Slab,
	"1": Page, "page": Page, "alloc_page": Page,
	"2": Bio, "bio": Bio,
	"3": Alloc, "alloc": Alloc,
}

func (p *parser) failType(path string, v any) FailType {
	const want = "want 0|slab, 1|page, 2|bio or 3|alloc"
	switch v := v.(type) {
	case json.Number:
		n, err := strconv.ParseInt(v.String(), 10, 64)
		if err != nil || n < 0 || n >= int64(len(FailPoints)) {
			p.errorf(path, "%s is not a fail type; %s", v, want)
			return 0
		}
		return FailType(n)
	case string:
		if t, ok := failTypeNames[strings.ToLower(strings.TrimSpace(v))]; ok {
			return t
		}
		p.errorf(path, "%s is not a fail type; %s", show(v), want)
		return 0
	}
	p.errorf(path, "%s; %s", describe(v), want)
	return 0
}

// name checks a kernel function name (funcname, function).
func (p *parser) name(path string, v any, what string) string {
	s, ok := v.(string)
	if !ok {
		p.errorf(path, "%s, want a kernel function name (%s)", describe(v), what)
		return ""
	}
	switch {
	case s == "":
		p.errorf(path, "must not be empty (%s)", what)
	case len(s) > MaxNameBytes:
		p.errorf(path, "%s is %d bytes long, at most %d allowed", show(s), len(s), MaxNameBytes)
	case !identRE.MatchString(s):
		if i := strings.IndexByte(s, '.'); i > 0 && identRE.MatchString(s[:i]) {
			p.errorf(path, "%s is not a valid C identifier: compiler suffixes like .constprop.0 or .isra.0 are not part of the name; write %q", show(s), s[:i])
		} else {
			p.errorf(path, "%s is not a valid C identifier", show(s))
		}
	default:
		return s
	}
	return ""
}

func (p *parser) errno(path string, v any) int {
	const want = "want a name like EACCES or a number 1-4095"
	var n int64
	switch v := v.(type) {
	case json.Number:
		i, err := strconv.ParseInt(v.String(), 10, 64)
		if err != nil {
			p.errorf(path, "%s is not a whole number; %s", v, want)
			return 0
		}
		n = i
	case string:
		s := strings.TrimSpace(v)
		if leadingZeroRE.MatchString(s) {
			p.errorf(path, "%s has a leading zero; write it without leading zeros", show(v))
			return 0
		}
		if i, err := strconv.ParseInt(s, 10, 64); err == nil {
			n = i
			break
		}
		if e, ok := LookupErrno(s); ok {
			return e
		}
		if strings.HasPrefix(s, "-") {
			if _, ok := LookupErrno(s[1:]); ok {
				p.errorf(path, "%s: write the name without the minus sign (kfault returns -errno)", show(v))
				return 0
			}
		}
		if sug := suggestWithin(s, ErrnoNames(), 1); sug != "" {
			p.errorf(path, "unknown errno name %s (did you mean %q?)", show(v), sug)
		} else {
			p.errorf(path, "unknown errno name %s; %s", show(v), want)
		}
		return 0
	default:
		p.errorf(path, "%s; %s", describe(v), want)
		return 0
	}
	switch {
	case n < 0:
		p.errorf(path, "%d must be positive: kfault returns -errno, so write %d or its name", n, -n)
	case n == 0:
		p.errorf(path, "0 is not an error; %s", want)
	case n > MaxErrno:
		p.errorf(path, "%d is out of range; %s", n, want)
	default:
		return int(n)
	}
	return 0
}

func (p *parser) callchain(path string, v any) []Frame {
	list, ok := v.([]any)
	if !ok {
		p.errorf(path, "%s, want a list of frames ({funcname, parameters, predicate})", describe(v))
		return nil
	}
	if len(list) > MaxFrames {
		p.errorf(path, "%d frames, at most %d allowed", len(list), MaxFrames)
		return nil
	}
	var frames []Frame
	for i, item := range list {
		fp := indexPath(path, i)
		m, ok := item.(map[string]any)
		if !ok {
			p.errorf(fp, "%s, want a frame object ({funcname, parameters, predicate})", describe(item))
			continue
		}
		frames = append(frames, p.frame(fp, m))
	}
	return frames
}

func (p *parser) frame(path string, m map[string]any) Frame {
	var fr Frame
	p.unknownFields(path, m, frameFields, nil)
	if v, ok := present(m, "funcname"); ok {
		fr.FuncName = p.name(joinPath(path, "funcname"), v, "the kernel function that must be on the stack")
	} else {
		p.errorf(joinPath(path, "funcname"), "missing: name the kernel function that must be on the stack")
	}
	if v, ok := present(m, "parameters"); ok {
		fr.Parameters = p.text(joinPath(path, "parameters"), v, "omit it: BTF knows the signature")
		if fr.Parameters != "" {
			if reason := checkParameters(fr.Parameters); reason != "" {
				p.errorf(joinPath(path, "parameters"), "%s is not a C parameter list: %s", show(fr.Parameters), reason)
				fr.Parameters = ""
			}
		}
	}
	if v, ok := present(m, "predicate"); ok {
		fr.Predicate = p.text(joinPath(path, "predicate"), v, "omit it to match every call")
	}
	return fr
}

// text checks a free-text field (parameters, predicate): a non-empty string of
// printable ASCII, at most MaxTextBytes.
func (p *parser) text(path string, v any, omitHint string) string {
	s, ok := v.(string)
	if !ok {
		p.errorf(path, "%s, want a string", describe(v))
		return ""
	}
	if strings.TrimSpace(s) == "" {
		p.errorf(path, "must not be empty (%s)", omitHint)
		return ""
	}
	if len(s) > MaxTextBytes {
		p.errorf(path, "%s is %d bytes long, at most %d allowed", show(s), len(s), MaxTextBytes)
		return ""
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; (c < ' ' || c > '~') && c != '\t' {
			p.errorf(path, "%s contains a non-printable or non-ASCII byte at offset %d", show(s), i)
			return ""
		}
	}
	return s
}

func (p *parser) headers(path string, v any) []string {
	list, ok := v.([]any)
	if !ok {
		p.errorf(path, "%s, want a list of header names (accepted for KernelChaos compatibility, unused)", describe(v))
		return nil
	}
	if len(list) > MaxHeaders {
		p.errorf(path, "%d entries, at most %d allowed (kfault does not use them: leave headers out)", len(list), MaxHeaders)
		return nil
	}
	var out []string
	for i, item := range list {
		s, ok := item.(string)
		switch {
		case !ok:
			p.errorf(indexPath(path, i), "%s, want a string", describe(item))
		case len(s) > MaxHeaderBytes:
			p.errorf(indexPath(path, i), "%s is %d bytes long, at most %d allowed", show(s), len(s), MaxHeaderBytes)
		default:
			out = append(out, s)
		}
	}
	return out
}

// devices reads a list of block devices: absolute /dev paths or "major:minor". Paths are only
// checked for their shape here; the node resolves them (bpf.ResolveDevice).
func (p *parser) devices(path string, v any) []string {
	list, ok := v.([]any)
	if !ok {
		p.errorf(path, "%s, want a list of block devices (/dev/... paths or major:minor)", describe(v))
		return nil
	}
	if len(list) == 0 {
		p.errorf(path, "empty list: leave devices out to fail bios on every unprotected device")
		return nil
	}
	if len(list) > MaxDevices {
		p.errorf(path, "%d entries, at most %d allowed", len(list), MaxDevices)
		return nil
	}
	var out []string
	seen := map[string]bool{}
	for i, item := range list {
		s, ok := item.(string)
		if !ok {
			p.errorf(indexPath(path, i), "%s, want a string (/dev/... path or major:minor)", describe(item))
			continue
		}
		if err := CheckDevice(s); err != nil {
			p.errorf(indexPath(path, i), "%s: %v", show(s), err)
			continue
		}
		if seen[s] {
			p.errorf(indexPath(path, i), "%s is listed twice", show(s))
			continue
		}
		seen[s] = true
		out = append(out, s)
	}
	return out
}

// CheckDevice checks the shape of one devices entry: an absolute, clean path under /dev, or
// major:minor with a major below 4096 and a minor below 1<<20 (the kernel's dev_t).
func CheckDevice(s string) error {
	if len(s) > MaxNameBytes {
		return fmt.Errorf("%d bytes long, at most %d allowed", len(s), MaxNameBytes)
	}
	if _, _, ok, err := ParseDevNumber(s); ok {
		return err
	}
	if !strings.HasPrefix(s, "/dev/") || path.Clean(s) != s || len(s) == len("/dev/") {
		return errors.New("want a block device path under /dev (e.g. /dev/nullb0) or major:minor (e.g. 259:0)")
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c <= ' ' || c > '~' {
			return fmt.Errorf("contains a space, non-printable or non-ASCII byte at offset %d", i)
		}
	}
	return nil
}

// ParseDevNumber reads "major:minor". ok says whether s has that shape (digits, a colon,
// digits); err whether the numbers are out of the kernel's dev_t range (12-bit major,
// 20-bit minor).
func ParseDevNumber(s string) (major, minor uint32, ok bool, err error) {
	a, b, found := strings.Cut(s, ":")
	if !found || a == "" || b == "" || strings.Trim(a, "0123456789") != "" || strings.Trim(b, "0123456789") != "" {
		return 0, 0, false, nil
	}
	ma, err1 := strconv.ParseUint(a, 10, 32)
	mi, err2 := strconv.ParseUint(b, 10, 32)
	if err1 != nil || err2 != nil || ma >= 1<<12 || mi >= 1<<20 {
		return 0, 0, true, errors.New("major:minor out of range (major < 4096, minor < 1048576)")
	}
	return uint32(ma), uint32(mi), true, nil
}

func (p *parser) times(path string, v any) uint64 {
	n, ok := v.(json.Number)
	if !ok {
		p.errorf(path, "%s, want a whole number >= 0 (0 means unlimited)", describe(v))
		return 0
	}
	if u, err := strconv.ParseUint(n.String(), 10, 64); err == nil {
		return u
	}
	x, err := strconv.ParseFloat(n.String(), 64)
	switch {
	case err == nil && x < 0:
		p.errorf(path, "%s must not be negative (0 means unlimited)", n)
	case err == nil && x != math.Trunc(x):
		p.errorf(path, "%s is not a whole number", n)
	case err == nil && x < math.MaxUint64:
		return uint64(x)
	default:
		p.errorf(path, "%s is too large (at most %d)", n, uint64(math.MaxUint64))
	}
	return 0
}

func (p *parser) duration(path string, v any) time.Duration {
	switch v := v.(type) {
	case string:
		d, err := time.ParseDuration(strings.TrimSpace(v))
		switch {
		case err != nil:
			p.errorf(path, "%s is not a duration; want a Go duration like 30s, 5m or 1h30m", show(v))
		case d < 0:
			p.errorf(path, "%s must not be negative", show(v))
		default:
			return d
		}
	case json.Number:
		p.errorf(path, "%s has no unit; write it like \"%ss\"", v, v)
	default:
		p.errorf(path, "%s, want a Go duration like 30s, 5m or 1h30m", describe(v))
	}
	return 0
}

var (
	fnPtrParamRE   = regexp.MustCompile(`\(\s*\*\s*([A-Za-z_][A-Za-z0-9_]*)\s*\)\s*\(.*\)$`)
	trailingNameRE = regexp.MustCompile(`([A-Za-z_][A-Za-z0-9_]*)$`)
	arraySuffixRE  = regexp.MustCompile(`\s*\[[A-Za-z0-9_ ]*\]$`)
	paramCharsRE   = regexp.MustCompile(`^[A-Za-z0-9_ \t*\[\](),.]*$`)
)

// cTypeWords are words that end a type, never a parameter name.
var cTypeWords = map[string]bool{
	"void": true, "char": true, "short": true, "int": true, "long": true, "float": true,
	"double": true, "signed": true, "unsigned": true, "const": true, "volatile": true,
	"struct": true, "union": true, "enum": true, "_Bool": true, "bool": true, "restrict": true,
	"__user": true,
}

// checkParameters is the light syntax check of a C parameter list: comma-separated
// declarations, each ending in a parameter name. It returns "" when s passes.
func checkParameters(s string) string {
	var parts []string
	depth, start := 0, 0
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '(':
			depth++
		case ')':
			depth--
			if depth < 0 {
				return "unbalanced parentheses"
			}
		case ',':
			if depth == 0 {
				parts = append(parts, s[start:i])
				start = i + 1
			}
		}
	}
	if depth != 0 {
		return "unbalanced parentheses"
	}
	parts = append(parts, s[start:])
	if len(parts) == 1 && strings.TrimSpace(parts[0]) == "void" {
		return ""
	}
	for i, part := range parts {
		t := strings.TrimSpace(part)
		n := i + 1
		switch {
		case t == "":
			return fmt.Sprintf("parameter %d is empty", n)
		case t == "...":
			if i != len(parts)-1 {
				return "... must be the last parameter"
			}
			continue
		case !paramCharsRE.MatchString(t) || strings.Contains(strings.ReplaceAll(t, "...", ""), "."):
			return fmt.Sprintf("parameter %d (%q) has a character that cannot appear in a declaration", n, t)
		}
		if fnPtrParamRE.MatchString(t) {
			continue
		}
		for arraySuffixRE.MatchString(t) {
			t = arraySuffixRE.ReplaceAllString(t, "")
		}
		name := trailingNameRE.FindString(t)
		rest := strings.TrimSpace(strings.TrimSuffix(t, name))
		if name == "" || rest == "" || cTypeWords[name] {
			return fmt.Sprintf("parameter %d (%q) does not end in a parameter name", n, strings.TrimSpace(part))
		}
	}
	return ""
}
