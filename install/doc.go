// Package install holds kfault's installation files: containerd config snippets
// (containerd/), the systemd unit (systemd/), NRI pre-registration (nri/) and the
// Kubernetes DaemonSet with its kustomization (kubernetes/). See README.md.
//
// Its one piece of Go, Render (kubernetes.go), renders the kustomization with the kustomize
// library (what `kubectl kustomize` runs) and decodes every object strictly into its Kubernetes
// API type. install_test.go, the offline check that runs in `go test ./...`, checks with it the
// DaemonSet's privileges and mounts, parses the node configs with the plugin's own parser, and
// checks the containerd snippets, the systemd unit and the Makefile's install paths against each
// other. The kubelet suite in the test VM (test/e2e/kubelet_test.go) runs the DaemonSet's pod
// template on a real kubelet.
package install
