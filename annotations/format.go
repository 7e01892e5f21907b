package annotations

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
)

// HookFunctions names the kernel functions whose return value the fault overrides: the
// failtype's (should_failslab, ..., alloc's LSM hooks), or Function.
func (f Fault) HookFunctions() []string {
	if f.Function != "" {
		return []string{f.Function}
	}
	return f.FailType.HookFunctions()
}

// HookName names what the fault overrides in one word, for labels: the hooked function, or the
// failtype's name when it hooks several (alloc).
func (f Fault) HookName() string {
	if fns := f.HookFunctions(); len(fns) == 1 {
		return fns[0]
	}
	return f.FailType.String()
}

// ReturnValue is the value the hooked function returns while the fault fires:
// -ENOMEM for slab and alloc, 1 (true) for page, -EIO for bio, -Errno for a function.
func (f Fault) ReturnValue() int64 {
	if f.Function != "" {
		return -int64(f.Errno)
	}
	p, _ := f.FailType.Point()
	return p.Return
}

// returnName renders ReturnValue for people: "-ENOMEM", "true", "-EACCES".
func (f Fault) returnName() string {
	switch {
	case f.Function != "":
		return "-" + formatErrno(f.Errno)
	case f.FailType == Page:
		return "true"
	}
	v := f.ReturnValue()
	if name := ErrnoName(int(-v)); name != "" {
		return "-" + name
	}
	return strconv.FormatInt(v, 10)
}

// String summarises what the fault arms, in one line, e.g.
//
//	slab: should_failslab returns -ENOMEM when called under d_alloc_parallel [STRNCMP(name->name, "bananas", 8)], probability 1%, at most 10 times, for 5m0s
func (f Fault) String() string {
	var b strings.Builder
	if f.Function != "" {
		fmt.Fprintf(&b, "function: %s returns %s (%d)", f.Function, f.returnName(), f.ReturnValue())
	} else {
		fns, verb := f.HookFunctions(), "returns"
		if len(fns) > 1 {
			verb = "return"
		}
		fmt.Fprintf(&b, "%s: %s %s %s", f.FailType, strings.Join(fns, ", "), verb, f.returnName())
	}
	if len(f.CallChain) > 0 {
		b.WriteString(" when called under ")
		for i, fr := range f.CallChain {
			if i > 0 {
				b.WriteString(" -> ")
			}
			b.WriteString(fr.FuncName)
			if fr.Predicate != "" {
				fmt.Fprintf(&b, " [%s]", fr.Predicate)
			}
		}
	}
	if len(f.Devices) > 0 {
		fmt.Fprintf(&b, " on devices %s", strings.Join(f.Devices, ", "))
	}
	if f.Probability != DefaultProbability {
		fmt.Fprintf(&b, ", probability %s%%", formatFloat(f.Probability))
	} else {
		b.WriteString(", every time")
	}
	if f.Times == 1 {
		b.WriteString(", at most 1 time")
	} else if f.Times > 0 {
		fmt.Fprintf(&b, ", at most %d times", f.Times)
	} else {
		b.WriteString(", no limit on times")
	}
	if f.Duration > 0 {
		fmt.Fprintf(&b, ", for %s", f.Duration)
	} else {
		b.WriteString(", until the container stops")
	}
	if f.Select != nil {
		fmt.Fprintf(&b, ", only in %s", f.Select)
	}
	return b.String()
}

func formatFloat(x float64) string {
	return strconv.FormatFloat(x, 'g', -1, 64)
}

// Encode renders faults as an annotation value in YAML: a single object for one
// fault, a list otherwise. Parse(Encode(fs)) returns fs again for any fs that Parse
// produced. Fields at their defaults are left out; headers are kept.
func Encode(faults []Fault) string {
	var b strings.Builder
	for _, f := range faults {
		lines := encodeFault(f)
		for j, l := range lines {
			switch {
			case len(faults) == 1:
				b.WriteString(l)
			case j == 0:
				b.WriteString("- " + l)
			default:
				b.WriteString("  " + l)
			}
			b.WriteByte('\n')
		}
	}
	return b.String()
}

func encodeFault(f Fault) []string {
	var lines []string
	if f.Function != "" {
		lines = append(lines, "function: "+yamlString(f.Function), "errno: "+formatErrno(f.Errno))
	} else {
		lines = append(lines, fmt.Sprintf("failtype: %d  # %s", int(f.FailType), f.FailType))
	}
	if len(f.CallChain) > 0 {
		lines = append(lines, "callchain:")
		for _, fr := range f.CallChain {
			lines = append(lines, "- funcname: "+yamlString(fr.FuncName))
			if fr.Parameters != "" {
				lines = append(lines, "  parameters: "+yamlString(fr.Parameters))
			}
			if fr.Predicate != "" {
				lines = append(lines, "  predicate: "+yamlString(fr.Predicate))
			}
		}
	}
	if len(f.Headers) > 0 {
		lines = append(lines, "headers:")
		for _, h := range f.Headers {
			lines = append(lines, "- "+yamlString(h))
		}
	}
	if len(f.Devices) > 0 {
		lines = append(lines, "devices:")
		for _, d := range f.Devices {
			lines = append(lines, "- "+yamlString(d))
		}
	}
	if f.Probability != DefaultProbability {
		lines = append(lines, "probability: "+formatFloat(f.Probability))
	}
	if f.Times != 0 {
		lines = append(lines, "times: "+strconv.FormatUint(f.Times, 10))
	}
	if f.Duration != 0 {
		lines = append(lines, "duration: "+yamlString(f.Duration.String()))
	}
	if s := f.Select; s != nil {
		lines = append(lines, "select:")
		if len(s.Ordinals) > 0 {
			lines = append(lines, "  ordinals: ["+joinInts(s.Ordinals, ", ")+"]")
		} else {
			lines = append(lines, "  percent: "+formatFloat(s.Percent))
		}
		if s.Seed != "" {
			lines = append(lines, "  seed: "+yamlString(s.Seed))
		}
	}
	return lines
}

// yamlWords are plain scalars YAML 1.1 would read as something other than a string.
var yamlWords = map[string]bool{
	"y": true, "yes": true, "n": true, "no": true, "true": true, "false": true,
	"on": true, "off": true, "null": true,
}

// yamlString writes identifiers plain and everything else as a double-quoted
// scalar (JSON string syntax is valid YAML).
func yamlString(s string) string {
	if identRE.MatchString(s) && !yamlWords[strings.ToLower(s)] {
		return s
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(s)
	return strings.TrimSuffix(buf.String(), "\n")
}

// jsonFault is the JSON form of a fault, fields in the documented order.
type jsonFault struct {
	FailType    *int        `json:"failtype,omitempty"`
	Function    string      `json:"function,omitempty"`
	Errno       string      `json:"errno,omitempty"`
	CallChain   []Frame     `json:"callchain,omitempty"`
	Headers     []string    `json:"headers,omitempty"`
	Devices     []string    `json:"devices,omitempty"`
	Probability *float64    `json:"probability,omitempty"`
	Times       uint64      `json:"times,omitempty"`
	Duration    string      `json:"duration,omitempty"`
	Select      *jsonSelect `json:"select,omitempty"`
}

// jsonSelect is the JSON form of select.
type jsonSelect struct {
	Percent  *float64 `json:"percent,omitempty"`
	Ordinals []int    `json:"ordinals,omitempty"`
	Seed     string   `json:"seed,omitempty"`
}

// EncodeJSON renders faults as a one-line JSON annotation value, like Encode.
func EncodeJSON(faults []Fault) string {
	out := make([]jsonFault, len(faults))
	for i, f := range faults {
		j := jsonFault{CallChain: f.CallChain, Headers: f.Headers, Devices: f.Devices, Times: f.Times}
		if f.Function != "" {
			j.Function, j.Errno = f.Function, formatErrno(f.Errno)
		} else {
			ft := int(f.FailType)
			j.FailType = &ft
		}
		if f.Probability != DefaultProbability {
			p := f.Probability
			j.Probability = &p
		}
		if f.Duration != 0 {
			j.Duration = f.Duration.String()
		}
		if s := f.Select; s != nil {
			j.Select = &jsonSelect{Ordinals: s.Ordinals, Seed: s.Seed}
			if len(s.Ordinals) == 0 {
				pct := s.Percent
				j.Select.Percent = &pct
			}
		}
		out[i] = j
	}
	var v any = out
	if len(out) == 1 {
		v = out[0]
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(v)
	return strings.TrimSuffix(buf.String(), "\n")
}

// Faults is a parsed fault list as kfault stores it: JSON in the annotation's own form (what
// EncodeJSON writes), read back through Parse, so stored faults are checked as annotations are.
type Faults []Fault

// MarshalJSON writes the list as EncodeJSON does, always as a list.
func (fs Faults) MarshalJSON() ([]byte, error) {
	if len(fs) == 0 {
		return []byte("[]"), nil
	}
	text := EncodeJSON(fs)
	if len(fs) == 1 {
		text = "[" + text + "]"
	}
	return []byte(text), nil
}

// UnmarshalJSON reads a list written by MarshalJSON, or the annotation text as a JSON string
// (what state files of earlier kfault versions hold). A value this version's parser refuses
// reads as no faults rather than an error, so that the rest of a state file still loads.
func (fs *Faults) UnmarshalJSON(data []byte) error {
	text := string(data)
	if len(data) > 0 && data[0] == '"' {
		if err := json.Unmarshal(data, &text); err != nil {
			return err
		}
	}
	*fs = nil
	if strings.TrimSpace(text) == "[]" || strings.TrimSpace(text) == "" {
		return nil
	}
	if parsed, err := Parse(text); err == nil {
		*fs = parsed
	}
	return nil
}

// Equal reports whether two lists hold the same faults.
func (fs Faults) Equal(other Faults) bool {
	return len(fs) == len(other) && (len(fs) == 0 || EncodeJSON(fs) == EncodeJSON(other))
}
