// Command images builds the OCI images the e2e suites run, with no registry: a busybox image
// holding busybox-static, its applet links and the project's static test programs, and a "pause"
// image for pod sandboxes. Each is written as an OCI layout tar that `ctr images import` takes.
//
//	go run ./test/images -out DIR [-busybox /bin/busybox] [PROGRAM...]
package main

import (
	"archive/tar"
	"bytes"
	"flag"
	"fmt"
	"log"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/kfault/kfault/test/images/oci"
)

// Image names the e2e suites refer to.
const (
	BusyboxImage = "kfault.test/busybox:latest"
	PauseImage   = "kfault.test/pause:latest"
)

func main() {
	out := flag.String("out", "", "directory to write busybox.tar and pause.tar into")
	busybox := flag.String("busybox", "/bin/busybox", "a static busybox binary")
	flag.Parse()
	if *out == "" {
		log.Fatal("images: -out is required")
	}
	layer, err := rootfsLayer(*busybox, flag.Args())
	if err != nil {
		log.Fatalf("images: %v", err)
	}
	if err := os.MkdirAll(*out, 0o755); err != nil {
		log.Fatal(err)
	}
	for _, img := range []struct {
		name, file string
		cmd        []string
	}{
		{BusyboxImage, "busybox.tar", []string{"sh"}},
		{PauseImage, "pause.tar", []string{"sleep", "2147483647"}},
	} {
		if err := oci.WriteImage(filepath.Join(*out, img.file), img.name, layer, img.cmd); err != nil {
			log.Fatalf("images: %s: %v", img.name, err)
		}
		fmt.Println(filepath.Join(*out, img.file))
	}
}

// rootfsLayer makes the single layer: /bin/busybox with a link per applet, and each program
// under /usr/local/bin.
func rootfsLayer(busybox string, programs []string) (v1.Layer, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, dir := range []string{"bin", "usr", "usr/local", "usr/local/bin", "tmp", "etc", "proc", "sys", "dev", "mnt", "data"} {
		mode := int64(0o755)
		if dir == "tmp" {
			mode = 0o1777
		}
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: dir + "/", Mode: mode, ModTime: oci.Epoch}); err != nil {
			return nil, err
		}
	}
	if err := oci.AddFile(tw, busybox, "bin/busybox"); err != nil {
		return nil, err
	}
	applets, err := exec.Command(busybox, "--list").Output()
	if err != nil {
		return nil, fmt.Errorf("listing busybox applets: %w", err)
	}
	for _, a := range strings.Fields(string(applets)) {
		if a == "busybox" {
			continue
		}
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeSymlink, Name: "bin/" + a, Linkname: "busybox", Mode: 0o777, ModTime: oci.Epoch}); err != nil {
			return nil, err
		}
	}
	for _, p := range programs {
		if err := oci.AddFile(tw, p, "usr/local/bin/"+filepath.Base(p)); err != nil {
			return nil, err
		}
	}
	passwd := []byte("root:x:0:0:root:/:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n")
	if err := tw.WriteHeader(&tar.Header{Name: "etc/passwd", Mode: 0o644, Size: int64(len(passwd)), ModTime: oci.Epoch}); err != nil {
		return nil, err
	}
	if _, err := tw.Write(passwd); err != nil {
		return nil, err
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return oci.Layer(buf.Bytes())
}
