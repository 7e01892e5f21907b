package main

import (
	"fmt"
	"io"
	"runtime/debug"
)

func runVersion(_ []string, _ io.Reader, stdout, _ io.Writer) int {
	v := "(devel)"
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" {
		v = bi.Main.Version
	}
	fmt.Fprintln(stdout, "kfault", v)
	return 0
}
