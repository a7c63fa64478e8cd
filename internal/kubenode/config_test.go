package kubenode

import (
	"encoding/json"
	"net/netip"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/imds-proxy/imds-proxy/internal/golden"
)

var testLayout = newLayout("/tmp/imdsp-4242-node-1")

// TestConfigGolden: the files the node writes, byte for byte.
func TestConfigGolden(t *testing.T) {
	subnet := netip.MustParsePrefix("169.254.200.0/24")
	golden.Check(t, "containerd.toml", containerdConfig(testLayout, "localhost/imds-proxy-k8s/pause:t1"))
	golden.Check(t, "cni.conflist", cniConfig(testLayout, subnet, netip.MustParseAddr("169.254.200.1")))
	golden.Check(t, "kubelet.yaml", kubeletConfig(testLayout, "/imdsp-4242-node-1"))
	golden.Check(t, "kubelet.args", strings.Join(kubeletArgs(testLayout, "imds-proxy-node", "/tmp/imdsp-4242-kube-1/kubeconfig"), "\n")+"\n")
}

// TestConfigParses: the rendered YAML and JSON parse, so a quoting mistake
// in a template fails here and not in the kubelet.
func TestConfigParses(t *testing.T) {
	var conf struct {
		Plugins []struct {
			Type string `json:"type"`
			IPAM struct {
				DataDir string `json:"dataDir"`
			} `json:"ipam"`
		} `json:"plugins"`
	}
	if err := json.Unmarshal([]byte(cniConfig(testLayout, DefaultPodSubnet, netip.MustParseAddr("169.254.200.1"))), &conf); err != nil {
		t.Fatalf("CNI conflist: %v", err)
	}
	if len(conf.Plugins) != 2 || conf.Plugins[0].Type != "bridge" || conf.Plugins[0].IPAM.DataDir != testLayout.CNIDataDir {
		t.Errorf("CNI conflist: %+v", conf)
	}
	var kc map[string]any
	if err := yaml.UnmarshalStrict([]byte(kubeletConfig(testLayout, "/x")), &kc); err != nil {
		t.Fatalf("kubelet config: %v", err)
	}
	if kc["cgroupRoot"] != "/x" || kc["podLogsDir"] != testLayout.PodLogsDir || kc["cgroupDriver"] != "cgroupfs" {
		t.Errorf("kubelet config: %v", kc)
	}
}

// TestLayoutDirs: every directory lies under the node's directory, which
// no private mount hides.
func TestLayoutDirs(t *testing.T) {
	for _, d := range testLayout.dirs() {
		if !strings.HasPrefix(d, testLayout.Dir+"/") {
			t.Errorf("%s outside %s", d, testLayout.Dir)
		}
	}
	if shadowed(testLayout.Dir) {
		t.Errorf("%s is shadowed", testLayout.Dir)
	}
	for path, want := range map[string]bool{
		"/run": true, "/run/x": true, "/var/lib/kubelet": true, "/var/log": true,
		"/runner": false, "/var/library": false, "/tmp/run": false, "/var": false,
	} {
		if got := shadowed(path); got != want {
			t.Errorf("shadowed(%q) = %v, want %v", path, got, want)
		}
	}
}
