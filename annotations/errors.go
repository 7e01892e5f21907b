package annotations

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
)

// FieldError is one rejection: the field path (e.g. "[1].callchain[0].funcname", or ""
// for the value as a whole) and the reason, which names the offending value.
type FieldError struct {
	Path   string
	Reason string
}

func (e *FieldError) Error() string {
	if e.Path == "" {
		return e.Reason
	}
	return e.Path + ": " + e.Reason
}

// Errors is every rejection found in one annotation value, in document order as far
// as the field order allows. Parse returns it as its error.
type Errors []*FieldError

// maxReported bounds how many errors Error() spells out.
const maxReported = 10

func (es Errors) Error() string {
	var b strings.Builder
	for i, e := range es {
		if i == maxReported {
			fmt.Fprintf(&b, "; and %d more", len(es)-maxReported)
			break
		}
		if i > 0 {
			b.WriteString("; ")
		}
		b.WriteString(e.Error())
	}
	return b.String()
}

func joinPath(prefix, field string) string {
	switch {
	case prefix == "":
		return field
	case field == "":
		return prefix
	case strings.HasPrefix(field, "["):
		return prefix + field
	}
	return prefix + "." + field
}

func indexPath(prefix string, i int) string {
	return prefix + "[" + strconv.Itoa(i) + "]"
}

// describe names the JSON kind of v for type errors: `"abc" is a string`.
func describe(v any) string {
	switch v := v.(type) {
	case nil:
		return "null"
	case string:
		return show(v) + " is a string"
	case json.Number:
		return v.String() + " is a number"
	case bool:
		return strconv.FormatBool(v) + " is a boolean"
	case []any:
		return "a list"
	case map[string]any:
		return "an object"
	}
	return fmt.Sprintf("%v", v)
}

// show quotes a string value for a message, shortening long ones.
func show(s string) string {
	const max = 64
	if len(s) > max {
		return strconv.Quote(s[:max]) + "..."
	}
	return strconv.Quote(s)
}

// suggest returns the candidate closest to s (case-insensitive edit distance at
// most 2, and less than half the length), or "".
func suggest(s string, candidates []string) string {
	return suggestWithin(s, candidates, 2)
}

// suggestWithin is suggest with a chosen maximum distance.
func suggestWithin(s string, candidates []string, maxDist int) string {
	best, bestD := "", maxDist+1
	ls := strings.ToLower(s)
	for _, c := range candidates {
		d := editDistance(ls, strings.ToLower(c))
		if d < bestD && d*2 < len(c) {
			best, bestD = c, d
		}
	}
	return best
}

// editDistance is the Levenshtein distance between a and b (bytes). Inputs longer
// than 64 bytes are not compared (the distance is reported as large).
func editDistance(a, b string) int {
	if len(a) > 64 || len(b) > 64 {
		return 1 << 30
	}
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
