// Package install holds kfault's installation files: containerd config snippets
// (containerd/), the systemd unit (systemd/), NRI pre-registration (nri/) and the
// Kubernetes DaemonSet with its kustomization (kubernetes/). See README.md.
//
// There is no Go code here besides install_test.go, the offline check that runs in
// `go test ./...`: it renders the kustomization with the kustomize library (what
// `kubectl kustomize` runs), decodes every object strictly into its Kubernetes API
// type, checks the DaemonSet's privileges and mounts, parses the node configs with
// the plugin's own parser, and checks the containerd snippets, the systemd unit and
// the Makefile's install paths against each other.
package install
