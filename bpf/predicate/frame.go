package predicate

import (
	"errors"
	"fmt"
	"strings"

	"github.com/cilium/ebpf/btf"
)

// FrameError is an error about one call-chain frame, naming the field as the annotation
// does: "callchain[1].predicate: column 15: unknown member ...".
type FrameError struct {
	Index int    // position of the frame in the call chain
	Field string // "funcname", "parameters" or "predicate"
	Err   error  // an *Error for parameters and predicate errors
}

func (e *FrameError) Error() string {
	return fmt.Sprintf("callchain[%d].%s: %v", e.Index, e.Field, e.Err)
}

func (e *FrameError) Unwrap() error { return e.Err }

// CompileFrame resolves call-chain frame index against spec and compiles its predicate, if
// any (prog is nil when predicate is empty). Errors are *FrameError values.
func CompileFrame(spec *btf.Spec, index int, funcName, parameters, predicate string, opts Options) (*Signature, *Program, error) {
	sig, err := Resolve(spec, funcName, parameters)
	if err != nil {
		field := "funcname"
		var pe *Error
		if errors.As(err, &pe) {
			field = "parameters"
		}
		return nil, nil, &FrameError{Index: index, Field: field, Err: err}
	}
	if strings.TrimSpace(predicate) == "" {
		return sig, nil, nil
	}
	prog, err := Compile(sig, predicate, opts)
	if err != nil {
		return sig, nil, &FrameError{Index: index, Field: "predicate", Err: err}
	}
	return sig, prog, nil
}
