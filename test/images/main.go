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
	"io"
	"log"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Image names the e2e suites refer to.
const (
	BusyboxImage = "kfault.test/busybox:latest"
	PauseImage   = "kfault.test/pause:latest"
)

// epoch keeps layers reproducible: same inputs, same digest.
var epoch = time.Unix(0, 0)

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
		if err := writeImage(filepath.Join(*out, img.file), img.name, layer, img.cmd); err != nil {
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
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: dir + "/", Mode: mode, ModTime: epoch}); err != nil {
			return nil, err
		}
	}
	if err := addFile(tw, busybox, "bin/busybox"); err != nil {
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
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeSymlink, Name: "bin/" + a, Linkname: "busybox", Mode: 0o777, ModTime: epoch}); err != nil {
			return nil, err
		}
	}
	for _, p := range programs {
		if err := addFile(tw, p, "usr/local/bin/"+filepath.Base(p)); err != nil {
			return nil, err
		}
	}
	passwd := []byte("root:x:0:0:root:/:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n")
	if err := tw.WriteHeader(&tar.Header{Name: "etc/passwd", Mode: 0o644, Size: int64(len(passwd)), ModTime: epoch}); err != nil {
		return nil, err
	}
	if _, err := tw.Write(passwd); err != nil {
		return nil, err
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	data := buf.Bytes()
	return tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(data)), nil
	}, tarball.WithMediaType(types.OCILayer))
}

func addFile(tw *tar.Writer, src, name string) error {
	data, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o755, Size: int64(len(data)), ModTime: epoch}); err != nil {
		return err
	}
	_, err = tw.Write(data)
	return err
}

// writeImage writes an OCI layout holding one image, named for containerd, as a tar file.
func writeImage(path, name string, layer v1.Layer, cmd []string) error {
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	img, err := mutate.Append(img, mutate.Addendum{Layer: layer, MediaType: types.OCILayer})
	if err != nil {
		return err
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		return err
	}
	cfg = cfg.DeepCopy()
	cfg.Architecture, cfg.OS = "amd64", "linux"
	cfg.Config.Cmd = cmd
	cfg.Config.Env = []string{"PATH=/usr/local/bin:/bin"}
	if img, err = mutate.ConfigFile(img, cfg); err != nil {
		return err
	}

	dir, err := os.MkdirTemp("", "kfault-image-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	lp, err := layout.Write(dir, empty.Index)
	if err != nil {
		return err
	}
	tag := name[strings.LastIndex(name, ":")+1:]
	if err := lp.AppendImage(img, layout.WithAnnotations(map[string]string{
		"io.containerd.image.name":          name,
		"org.opencontainers.image.ref.name": tag,
	}), layout.WithPlatform(v1.Platform{OS: "linux", Architecture: "amd64"})); err != nil {
		return err
	}
	return tarDir(dir, path)
}

// tarDir writes the files under dir into a tar at path, with names relative to dir.
func tarDir(dir, path string) error {
	f, err := os.Create(path + ".tmp")
	if err != nil {
		return err
	}
	defer f.Close()
	tw := tar.NewWriter(f)
	err = filepath.Walk(dir, func(p string, info os.FileInfo, err error) error {
		if err != nil || p == dir {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		hdr, err := tar.FileInfoHeader(info, "")
		if err != nil {
			return err
		}
		hdr.Name, hdr.ModTime = filepath.ToSlash(rel), epoch
		if info.IsDir() {
			hdr.Name += "/"
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if info.IsDir() {
			return nil
		}
		src, err := os.Open(p)
		if err != nil {
			return err
		}
		defer src.Close()
		_, err = io.Copy(tw, src)
		return err
	})
	if err != nil {
		return err
	}
	if err := tw.Close(); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(path+".tmp", path)
}
