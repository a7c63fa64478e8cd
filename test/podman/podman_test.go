// Package podman_test plays deploy/examples/pod-manual.yaml in a real pod
// runtime: podman kube play, rootful, with --network none (only loopback; the
// default bridge network would edit the host firewall), images built locally
// by build/images-local.sh (nothing pulled), and the emulator from
// test/emulator standing in for Entra ID and the cluster's token issuer.
//
// The pod is derived by decoding the manifest and editing only what podman or
// the sandbox needs (see derivePod), so the init container's env and
// securityContext, the sidecar's args, env, UID and mounts are the ones users
// apply. A client container then gets a token through 169.254.169.254 the way
// a legacy app does.
//
// Needs root, podman, buildah, runc and debootstrap (hack/install-deps.sh);
// skipped otherwise and with -short.
package podman_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	"github.com/imds-proxy/imds-proxy/internal/gobuild"
)

// repoRoot is the repository root relative to this package.
const repoRoot = "../.."

// Names of the containers the test adds to the played pod.
const (
	loInit     = "test-pod-setup"   // init: 169.254.169.254/32 on lo, token placeholder
	emuName    = "test-emulator"    // Entra + issuer emulator
	clientName = "test-client"      // legacy app: curl through the redirect
	bypassName = "test-bypass-1501" // curl as the exempted UID
	rulesName  = "test-rules"       // proxy-init --check and iptables-save
)

// Paths inside the pod.
const (
	emuDir     = "/var/run/imds-proxy-test" // shared emptyDir: emulator CA
	emuCA      = emuDir + "/ca.pem"
	tokenDir   = "/var/run/secrets/azure/tokens"
	tokenFile  = tokenDir + "/azure-identity-token"
	resource   = "https://vault.azure.net"
	clientUser = 1000
)

func imageEnv(t *testing.T) map[string]string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(repoRoot, "build/image.env"))
	if err != nil {
		t.Fatal(err)
	}
	env := map[string]string{}
	for _, line := range strings.Split(string(data), "\n") {
		line = strings.TrimSpace(line)
		if k, v, ok := strings.Cut(line, "="); ok && !strings.HasPrefix(line, "#") {
			env[k] = v
		}
	}
	return env
}

// TestContainersConf needs no root: the committed containers.conf selects
// runc and ulimits this host allows (podman's defaults fail here).
func TestContainersConf(t *testing.T) {
	data, err := os.ReadFile(filepath.Join(repoRoot, "build/containers.conf"))
	if err != nil {
		t.Fatal(err)
	}
	conf := string(data)
	if !regexp.MustCompile(`(?m)^\[engine\]\s*\nruntime = "runc"$`).MatchString(conf) {
		t.Errorf("containers.conf: want [engine] runtime = \"runc\"\n%s", conf)
	}
	m := regexp.MustCompile(`(?m)^default_ulimits = \["nofile=(\d+):(\d+)", "nproc=(\d+):(\d+)"\]$`).FindStringSubmatch(conf)
	if m == nil {
		t.Fatalf("containers.conf: no default_ulimits for nofile and nproc\n%s", conf)
	}
	const rlimitNproc = 6 // RLIMIT_NPROC on Linux; package syscall has no name for it
	for i, res := range []int{syscall.RLIMIT_NOFILE, rlimitNproc} {
		var lim syscall.Rlimit
		if err := syscall.Getrlimit(res, &lim); err != nil {
			t.Fatal(err)
		}
		soft, _ := strconv.ParseUint(m[1+2*i], 10, 64)
		hard, _ := strconv.ParseUint(m[2+2*i], 10, 64)
		if soft > hard || hard > lim.Max {
			t.Errorf("ulimit %s=%d:%d exceeds this host's hard limit %d", []string{"nofile", "nproc"}[i], soft, hard, lim.Max)
		}
	}
}

// run runs a command (from the repository root unless dir is set) and
// returns its stdout; a failure ends the test with both outputs.
func run(t *testing.T, ctx context.Context, dir string, env []string, name string, args ...string) string {
	t.Helper()
	out, err := runErr(ctx, dir, env, name, args...)
	if err != nil {
		t.Fatalf("%s %s: %v", name, strings.Join(args, " "), err)
	}
	return out
}

func runErr(ctx context.Context, dir string, env []string, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	// On timeout kill the whole process group (debootstrap, tar, podman
	// under build/images-local.sh), not only the direct child.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 10 * time.Second
	cmd.Dir = dir
	if dir == "" {
		cmd.Dir = repoRoot
	}
	cmd.Env = append(os.Environ(), env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("%w\nstdout:\n%s\nstderr:\n%s", err, stdout.String(), stderr.String())
	}
	return stdout.String(), nil
}

// images are the local images one test run builds (unique tags) and removes.
type images struct {
	proxy, init, client, emulator, pause string
}

func requirePodman(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("-short: skipping the podman pod run")
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root: rootful podman with runc, and debootstrap for the init image (CI runs as root)")
	}
	for _, bin := range []string{"podman", "buildah", "runc", "debootstrap"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Fatalf("%s not installed (hack/install-deps.sh installs podman buildah runc debootstrap)", bin)
		}
	}
}

// podmanEnv returns the environment for podman and buildah: build/containers.conf
// (runc, ulimits) plus our own infra image, written to dir.
func podmanEnv(t *testing.T, dir, pauseImage string) []string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(repoRoot, "build/containers.conf"))
	if err != nil {
		t.Fatal(err)
	}
	conf := strings.Replace(string(data), "[engine]\n", "[engine]\ninfra_image = \""+pauseImage+"\"\n", 1)
	if conf == string(data) {
		t.Fatal("build/containers.conf has no [engine] table")
	}
	p := filepath.Join(dir, "containers.conf")
	if err := os.WriteFile(p, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	return []string{"CONTAINERS_CONF=" + p}
}

// buildImages builds every image the pod needs and registers their removal.
func buildImages(t *testing.T, ctx context.Context, env []string, tag string) images {
	t.Helper()
	im := images{
		proxy:    "localhost/imds-proxy-podmantest/proxy:" + tag,
		init:     "localhost/imds-proxy-podmantest/proxy-init:" + tag,
		client:   "localhost/imds-proxy-podmantest/client:" + tag,
		emulator: "localhost/imds-proxy-podmantest/emulator:" + tag,
		pause:    "localhost/imds-proxy-podmantest/pause:" + tag,
	}
	t.Cleanup(func() {
		start := time.Now()
		defer func() { t.Logf("image removal: %s", time.Since(start).Round(time.Millisecond)) }()
		for _, img := range []string{im.proxy, im.init, im.client, im.emulator, im.pause} {
			if out, err := runErr(context.Background(), "", env, "podman", "rmi", "--force", img); err != nil && !strings.Contains(err.Error(), "image not known") {
				t.Logf("podman rmi %s: %v %s", img, err, out)
			}
		}
	})
	start := time.Now()
	run(t, ctx, "", append(env, "PROXY_IMAGE="+im.proxy, "INIT_IMAGE="+im.init, "VERSION=podmantest"),
		"build/images-local.sh", "all")
	t.Logf("build/images-local.sh all: %s", time.Since(start).Round(time.Millisecond))
	start = time.Now()
	run(t, ctx, "", env, "build/images-local.sh", "debian", im.client, "rootfs-test-client", "iproute2,curl,ca-certificates")
	t.Logf("client image: %s", time.Since(start).Round(time.Millisecond))

	bin := t.TempDir()
	if err := gobuild.Build(ctx, bin, "./test/emulator", "./test/podman/pause"); err != nil {
		t.Fatal(err)
	}
	scratchImage(t, ctx, env, im.emulator, filepath.Join(bin, "emulator"), "/emulator")
	scratchImage(t, ctx, env, im.pause, filepath.Join(bin, "pause"), "/pause")
	for _, img := range []string{im.proxy, im.init, im.client, im.emulator} {
		size := strings.TrimSpace(run(t, ctx, "", env, "podman", "image", "inspect", "--format", "{{.Size}}", img))
		t.Logf("image %s: %s bytes", img, size)
	}
	return im
}

// scratchImage builds a FROM scratch image holding one static binary as its
// entrypoint.
func scratchImage(t *testing.T, ctx context.Context, env []string, image, bin, path string) {
	t.Helper()
	c := strings.TrimSpace(run(t, ctx, "", env, "buildah", "from", "scratch"))
	defer runErr(context.Background(), "", env, "buildah", "rm", c) //nolint:errcheck // best effort after commit --rm
	run(t, ctx, "", env, "buildah", "copy", "--quiet", "--chmod", "0555", c, bin, path)
	run(t, ctx, "", env, "buildah", "config", "--entrypoint", `["`+path+`"]`, c)
	run(t, ctx, "", env, "buildah", "commit", "--quiet", "--rm", c, image)
}

// imageConfig is the part of `podman image inspect` the contract is about.
type imageConfig struct {
	User       string   `json:"User"`
	Entrypoint []string `json:"Entrypoint"`
	Cmd        []string `json:"Cmd"`
	Env        []string `json:"Env"`
}

func inspectConfig(t *testing.T, ctx context.Context, env []string, image string) imageConfig {
	t.Helper()
	var c imageConfig
	out := run(t, ctx, "", env, "podman", "image", "inspect", "--format", "{{json .Config}}", image)
	if err := json.Unmarshal([]byte(out), &c); err != nil {
		t.Fatalf("inspect %s: %v: %s", image, err, out)
	}
	return c
}

// checkImages asserts that the locally built images carry build/image.env's
// user, entrypoint and PATH, with no CMD (the webhook passes no args to
// proxy-init), and the binaries and CA bundle where the contract says.
func checkImages(t *testing.T, ctx context.Context, env []string, im images) {
	t.Helper()
	ie := imageEnv(t)
	proxy := inspectConfig(t, ctx, env, im.proxy)
	if proxy.User != ie["PROXY_UID"]+":"+ie["PROXY_GID"] || !slices.Equal(proxy.Entrypoint, []string{ie["PROXY_BIN"]}) || len(proxy.Cmd) != 0 {
		t.Errorf("proxy image config %+v: want User %s:%s, Entrypoint [%s], no Cmd", proxy, ie["PROXY_UID"], ie["PROXY_GID"], ie["PROXY_BIN"])
	}
	init := inspectConfig(t, ctx, env, im.init)
	if init.User != ie["INIT_UID"]+":"+ie["INIT_UID"] || !slices.Equal(init.Entrypoint, []string{ie["INIT_BIN"]}) || len(init.Cmd) != 0 ||
		!slices.Contains(init.Env, "PATH="+ie["INIT_PATH"]) {
		t.Errorf("init image config %+v: want User %s:%s, Entrypoint [%s], no Cmd, PATH=%s", init, ie["INIT_UID"], ie["INIT_UID"], ie["INIT_BIN"], ie["INIT_PATH"])
	}
	// The proxy image's only files: the binary and the CA bundle.
	mnt := strings.TrimSpace(run(t, ctx, "", env, "podman", "image", "mount", im.proxy))
	defer runErr(context.Background(), "", env, "podman", "image", "unmount", im.proxy) //nolint:errcheck
	var files []string
	err := filepath.WalkDir(mnt, func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			rel, _ := filepath.Rel(mnt, p)
			files = append(files, "/"+rel)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(files)
	if want := []string{ie["CA_BUNDLE"], ie["PROXY_BIN"]}; !slices.Equal(files, want) {
		t.Errorf("proxy image files %v, want %v", files, want)
	}
	// proxy-init's binary and both iptables backends.
	mnt = strings.TrimSpace(run(t, ctx, "", env, "podman", "image", "mount", im.init))
	defer runErr(context.Background(), "", env, "podman", "image", "unmount", im.init) //nolint:errcheck
	for _, p := range []string{ie["INIT_BIN"], "/usr/sbin/iptables-nft", "/usr/sbin/iptables-legacy", "/usr/sbin/iptables-nft-save", "/usr/sbin/iptables-legacy-save"} {
		fi, err := os.Stat(filepath.Join(mnt, p))
		if err != nil || fi.Mode()&0o111 == 0 {
			t.Errorf("init image: %s missing or not executable (%v)", p, err)
		}
	}
}

// pod is the derived pod and what the test needs to know about it.
type pod struct {
	spec              corev1.Pod
	clientID, tenant  string
	saName, namespace string
	emuPort           int
}

func ptr[T any](v T) *T { return &v }

func decodeManifest(t *testing.T) corev1.Pod {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(repoRoot, "deploy/examples/pod-manual.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var p corev1.Pod
	if err := yaml.UnmarshalStrict(data, &p); err != nil {
		t.Fatalf("pod-manual.yaml: %v", err)
	}
	return p
}

func findContainer(t *testing.T, cs []corev1.Container, name string) *corev1.Container {
	t.Helper()
	for i := range cs {
		if cs[i].Name == name {
			return &cs[i]
		}
	}
	t.Fatalf("pod-manual.yaml has no container %s", name)
	return nil
}

func setEnv(c *corev1.Container, name, value string) {
	for i := range c.Env {
		if c.Env[i].Name == name {
			c.Env[i].Value = value
			return
		}
	}
	c.Env = append(c.Env, corev1.EnvVar{Name: name, Value: value})
}

// derivePod turns deploy/examples/pod-manual.yaml into the pod podman plays.
// Changes, and why:
//   - images: the locally built ones, imagePullPolicy Never (no registry);
//   - the projected service-account token volume (podman has no token
//     projection) becomes an emptyDir the emulator writes a minted token
//     into, at the same path; AZURE_AUTHORITY_HOST points at the emulator on
//     localhost and SSL_CERT_FILE at its CA in a shared emptyDir;
//   - the example's app container is replaced by test containers: the
//     emulator, a curl client as the pod's UID, and a curl as UID 1501;
//   - a first init container with NET_ADMIN puts 169.254.169.254/32 on lo
//     (under --network none there is no route to it, where a real pod would
//     route it via its default gateway) and a placeholder token file (the
//     proxy needs the file at start; kubelet would have projected it);
//   - restartPolicy Never, so the clients run once;
//   - no containerPort on azwi-proxy (podman publishes it, and --network
//     none refuses port mappings).
//
// azwi-proxy-init's env and securityContext and azwi-proxy's args, env
// names, securityContext, UID and token mount are left as written.
func derivePod(t *testing.T, im images, name string) pod {
	t.Helper()
	proxyUID, err := strconv.ParseInt(imageEnv(t)["PROXY_UID"], 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	p := decodeManifest(t)
	const emuPort, issuerPort = 8443, 8081
	out := pod{namespace: "default", saName: p.Spec.ServiceAccountName, emuPort: emuPort}

	p.Name = name
	p.Spec.RestartPolicy = corev1.RestartPolicyNever

	init := findContainer(t, p.Spec.InitContainers, "azwi-proxy-init")
	init.Image, init.ImagePullPolicy = im.init, corev1.PullNever
	if len(p.Spec.InitContainers) != 1 {
		t.Fatalf("pod-manual.yaml: want only azwi-proxy-init among init containers")
	}

	proxy := *findContainer(t, p.Spec.Containers, "azwi-proxy")
	proxy.Image, proxy.ImagePullPolicy = im.proxy, corev1.PullNever
	for _, e := range proxy.Env {
		switch e.Name {
		case "AZURE_CLIENT_ID":
			out.clientID = e.Value
		case "AZURE_TENANT_ID":
			out.tenant = e.Value
		case "AZURE_FEDERATED_TOKEN_FILE":
			if e.Value != tokenFile {
				t.Fatalf("AZURE_FEDERATED_TOKEN_FILE=%s, want %s", e.Value, tokenFile)
			}
		}
	}
	if out.clientID == "" || out.tenant == "" {
		t.Fatal("pod-manual.yaml: azwi-proxy lacks AZURE_CLIENT_ID or AZURE_TENANT_ID")
	}
	// podman turns containerPort into a port mapping, which --network none
	// rejects; the proxy listens on loopback only anyway.
	proxy.Ports = nil
	setEnv(&proxy, "AZURE_AUTHORITY_HOST", fmt.Sprintf("https://localhost:%d/", emuPort))
	setEnv(&proxy, "SSL_CERT_FILE", emuCA)
	proxy.VolumeMounts = append(proxy.VolumeMounts, corev1.VolumeMount{Name: "test-emulator", MountPath: emuDir, ReadOnly: true})

	var tokenVolume string
	for i, v := range p.Spec.Volumes {
		if v.Projected != nil && len(v.Projected.Sources) == 1 && v.Projected.Sources[0].ServiceAccountToken != nil {
			tokenVolume = v.Name
			p.Spec.Volumes[i].VolumeSource = corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}
		}
	}
	if tokenVolume == "" {
		t.Fatal("pod-manual.yaml: no projected service-account token volume")
	}
	p.Spec.Volumes = append(p.Spec.Volumes, corev1.Volume{Name: "test-emulator", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}})

	root := &corev1.SecurityContext{RunAsUser: ptr[int64](0), RunAsGroup: ptr[int64](0), RunAsNonRoot: ptr(false)}
	loRoot := root.DeepCopy()
	loRoot.Capabilities = &corev1.Capabilities{Add: []corev1.Capability{"NET_ADMIN"}, Drop: []corev1.Capability{"ALL"}}
	// Kubelet projects the token before any container starts, and the proxy
	// refuses to start without the file. The emulator only writes it once it
	// runs, beside the proxy, so this init container puts a placeholder there
	// first; the emulator replaces it (atomically) with the minted token
	// before it reports ready, and the proxy reads the file on every exchange.
	p.Spec.InitContainers = append([]corev1.Container{{
		Name:            loInit,
		Image:           im.client,
		ImagePullPolicy: corev1.PullNever,
		Command: []string{"sh", "-c", "ip addr add 169.254.169.254/32 dev lo && " +
			"echo 'placeholder until test-emulator writes a minted token' >" + tokenFile + " && chmod 0644 " + tokenFile},
		SecurityContext: loRoot,
		VolumeMounts:    []corev1.VolumeMount{{Name: tokenVolume, MountPath: tokenDir}},
	}}, p.Spec.InitContainers...)

	emulator := corev1.Container{
		Name:            emuName,
		Image:           im.emulator,
		ImagePullPolicy: corev1.PullNever,
		Args: []string{
			"--tenant=" + out.tenant,
			fmt.Sprintf("--addr=127.0.0.1:%d", emuPort),
			fmt.Sprintf("--issuer-addr=127.0.0.1:%d", issuerPort),
			"--host=localhost",
			"--app=" + out.clientID,
			"--federate-subject=system:serviceaccount:" + out.namespace + ":" + out.saName,
			"--sa-token-namespace=" + out.namespace,
			"--sa-token-name=" + out.saName,
			"--sa-token-out=" + tokenFile,
			"--ca-out=" + emuCA,
			"--info-out=" + emuDir + "/ready.json",
			"--log-level=debug",
		},
		SecurityContext: root,
		VolumeMounts: []corev1.VolumeMount{
			{Name: tokenVolume, MountPath: tokenDir},
			{Name: "test-emulator", MountPath: emuDir},
		},
	}

	url := "http://169.254.169.254/metadata/identity/oauth2/token?api-version=2018-02-01&resource=" + resource
	// Wait for the emulator (its ready file) and for the proxy to answer
	// through the redirect (any HTTP status: the bare probe gets a 400),
	// then ask once, as a legacy app does, and print status and body.
	// Finally stop the sidecar the way deploy/README.md tells Jobs on
	// clusters without native sidecars to.
	port := imageEnv(t)["PROXY_PORT"]
	clientScript := `set -u
for i in $(seq 1 300); do [ -s ` + emuDir + `/ready.json ] && break; sleep 0.1; done
for i in $(seq 1 300); do
  code=$(curl -s -o /dev/null -w '%{http_code}' http://169.254.169.254/metadata/identity/oauth2/token) && [ "$code" != 000 ] && break
  sleep 0.1
done
echo "PROBE $code after $i tries"
curl -sS -w '\nHTTP %{http_code}\n' -H Metadata:true '` + url + `'
echo "CURL rc=$?"
curl -sS -X POST -H Metadata:true -o /dev/null -w 'QUIT HTTP %{http_code}\n' http://127.0.0.1:` + port + `/quitquitquit
`
	client := corev1.Container{
		Name:            clientName,
		Image:           im.client,
		ImagePullPolicy: corev1.PullNever,
		Command:         []string{"sh", "-c", clientScript},
		SecurityContext: &corev1.SecurityContext{
			RunAsUser: ptr[int64](clientUser), RunAsGroup: ptr[int64](clientUser),
			AllowPrivilegeEscalation: ptr(false), Capabilities: &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
		},
		VolumeMounts: []corev1.VolumeMount{{Name: "test-emulator", MountPath: emuDir, ReadOnly: true}},
	}
	// The exempted UID is not redirected: with no real IMDS in this pod, its
	// connection is refused (curl exit 7) instead of reaching the proxy.
	bypass := corev1.Container{
		Name:            bypassName,
		Image:           im.client,
		ImagePullPolicy: corev1.PullNever,
		Command: []string{"sh", "-c", `curl -sS -m 5 -o /dev/null -H Metadata:true '` + url + `'
echo "BYPASS rc=$?"`},
		SecurityContext: &corev1.SecurityContext{
			RunAsUser: ptr(proxyUID), RunAsGroup: ptr(proxyUID),
			AllowPrivilegeEscalation: ptr(false), Capabilities: &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
		},
	}
	// podman removes init containers once they ran, and their logs with
	// them: read the rules back from the pod's network namespace instead,
	// with the init image's own --check and iptables-save.
	rules := corev1.Container{
		Name:            rulesName,
		Image:           im.init,
		ImagePullPolicy: corev1.PullNever,
		Command:         []string{"sh", "-c", `/proxy-init --check; echo "CHECK rc=$?"; iptables-save -t filter; iptables-save -t nat`},
		SecurityContext: loRoot,
	}
	p.Spec.Containers = []corev1.Container{emulator, proxy, client, bypass, rules}
	out.spec = p
	return out
}

// TestPodManual plays the derived pod and asserts that a legacy client's
// IMDS request returns the emulator's token through proxy-init's rules and
// the proxy sidecar.
func TestPodManual(t *testing.T) {
	requirePodman(t)
	// Stop our commands a minute before go test's own deadline, so the
	// cleanups below still remove the pod and the images (a go test timeout
	// panics without running them). A cold run first debootstraps the init
	// root filesystem (2 to 6 minutes here, see build/images-local.sh).
	deadline := time.Now().Add(15 * time.Minute)
	if d, ok := t.Deadline(); ok {
		deadline = d.Add(-time.Minute)
	}
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	dir := t.TempDir()
	tag := fmt.Sprintf("t%d", time.Now().UnixNano())
	env := podmanEnv(t, dir, "localhost/imds-proxy-podmantest/pause:"+tag)

	start := time.Now()
	im := buildImages(t, ctx, env, tag)
	checkImages(t, ctx, env, im)
	t.Logf("images built and checked: %s", time.Since(start).Round(time.Millisecond))

	p := derivePod(t, im, "imds-proxy-podmantest-"+tag)
	manifest, err := yaml.Marshal(p.spec)
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(dir, "pod.yaml")
	if err := os.WriteFile(file, manifest, 0o644); err != nil {
		t.Fatal(err)
	}
	// kube play runs in an otherwise empty directory: it builds an image
	// itself when a directory named like an image is in its working directory.
	playDir := filepath.Join(dir, "play")
	if err := os.Mkdir(playDir, 0o755); err != nil {
		t.Fatal(err)
	}
	// logs returns a container's output; podman logs replays the container's
	// stderr on its own stderr, so both are collected.
	logs := func(c string) string {
		cmd := exec.Command("podman", "logs", p.spec.Name+"-"+c)
		cmd.Env = append(os.Environ(), env...)
		out, err := cmd.CombinedOutput()
		if err != nil {
			return fmt.Sprintf("%s(podman logs: %v)", out, err)
		}
		return string(out)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("played pod:\n%s", manifest)
			ps, _ := runErr(context.Background(), "", env, "podman", "ps", "--all", "--filter", "pod="+p.spec.Name,
				"--format", "{{.Names}} {{.Status}}")
			t.Logf("containers:\n%s", ps)
			for _, c := range []string{emuName, "azwi-proxy", clientName, bypassName, rulesName} {
				t.Logf("logs of %s:\n%s", c, logs(c))
			}
		}
		start := time.Now()
		defer func() { t.Logf("pod removal: %s", time.Since(start).Round(time.Millisecond)) }()
		if out, err := runErr(context.Background(), playDir, env, "podman", "kube", "down", file); err != nil {
			t.Logf("podman kube down: %v %s", err, out)
		}
		if out, err := runErr(context.Background(), "", env, "podman", "pod", "rm", "--force", "--ignore", p.spec.Name); err != nil {
			t.Logf("podman pod rm: %v %s", err, out)
		}
	})

	start = time.Now()
	run(t, ctx, playDir, env, "podman", "kube", "play", "--network", "none", file)
	t.Logf("podman kube play: %s", time.Since(start).Round(time.Millisecond))

	waitCtx, waitCancel := context.WithTimeout(ctx, 2*time.Minute)
	defer waitCancel()
	for _, c := range []string{clientName, bypassName, rulesName} {
		code := strings.TrimSpace(run(t, waitCtx, "", env, "podman", "wait", p.spec.Name+"-"+c))
		if code != "0" {
			t.Errorf("%s exited %s", c, code)
		}
	}
	t.Logf("pod start to client done: %s", time.Since(start).Round(time.Millisecond))

	checkRules(t, logs(rulesName))
	checkBypass(t, logs(bypassName))
	clientOut := logs(clientName)
	checkToken(t, p, clientOut)
	t.Logf("client output (token elided):\n%s", regexp.MustCompile(`"access_token":"[^"]*"`).ReplaceAllString(clientOut, `"access_token":"..."`))

	// POST /quitquitquit made the sidecar exit 0. It ran as the manifest's
	// UID, on a read-only root filesystem, without capabilities.
	if code := strings.TrimSpace(run(t, waitCtx, "", env, "podman", "wait", p.spec.Name+"-azwi-proxy")); code != "0" {
		t.Errorf("azwi-proxy exited %s after /quitquitquit, want 0", code)
	}
	ie := imageEnv(t)
	state := run(t, ctx, "", env, "podman", "inspect", "--format",
		"{{.State.Status}} user={{.Config.User}} readonly={{.HostConfig.ReadonlyRootfs}} caps={{.EffectiveCaps}}", p.spec.Name+"-azwi-proxy")
	if got, want := strings.TrimSpace(state), "exited user="+ie["PROXY_UID"]+":"+ie["PROXY_GID"]+" readonly=true caps=[]"; got != want {
		t.Errorf("azwi-proxy: %q, want %q", got, want)
	}
	t.Logf("azwi-proxy log:\n%s", logs("azwi-proxy"))
}

// checkRules: azwi-proxy-init's rules are in place in the pod (--check). In
// nat, the jump to our chain is first in OUTPUT, the proxy UID is exempted
// and the rest is redirected to the proxy port; in filter, the guard's jump
// is first in OUTPUT, the proxy UID passes and every other connection to
// the metadata address that was not redirected is refused.
func checkRules(t *testing.T, out string) {
	t.Helper()
	ie := imageEnv(t)
	if !strings.Contains(out, "CHECK rc=0\n") {
		t.Errorf("proxy-init --check in the pod failed:\n%s", out)
	}
	tests := []struct {
		table string
		jump  string // the first OUTPUT rule's target
		rules []string
	}{
		{"nat", "IMDS_PROXY_OUTPUT", []string{
			`(?m)^-A IMDS_PROXY_OUTPUT -m owner --uid-owner ` + ie["PROXY_UID"] + ` .*-j ACCEPT$`,
			`(?m)^-A IMDS_PROXY_REDIRECT -p tcp .*-j REDIRECT --to-ports ` + ie["PROXY_PORT"] + `$`,
		}},
		{"filter", "IMDS_PROXY_GUARD", []string{
			`(?m)^-A IMDS_PROXY_GUARD -m owner --uid-owner ` + ie["PROXY_UID"] + ` .*-j RETURN$`,
			`(?m)^-A IMDS_PROXY_GUARD -p tcp -m tcp --tcp-flags FIN,SYN,RST,ACK SYN .*-j REJECT --reject-with tcp-reset$`,
		}},
	}
	for _, tt := range tests {
		m := regexp.MustCompile(`(?ms)^\*` + tt.table + `\n(.*?)^COMMIT$`).FindStringSubmatch(out)
		if m == nil {
			t.Errorf("iptables-save in the pod lacks the %s table:\n%s", tt.table, out)
			continue
		}
		first := regexp.MustCompile(`(?m)^-A OUTPUT .*$`).FindString(m[1])
		if !regexp.MustCompile(`^-A OUTPUT -d 169\.254\.169\.254/32 -p tcp -m tcp --dport 80 .*-j ` + tt.jump + `$`).MatchString(first) {
			t.Errorf("first %s OUTPUT rule %q, want the jump for 169.254.169.254:80 to %s:\n%s", tt.table, first, tt.jump, out)
		}
		for _, re := range tt.rules {
			if !regexp.MustCompile(re).MatchString(m[1]) {
				t.Errorf("iptables-save -t %s in the pod lacks /%s/:\n%s", tt.table, re, out)
			}
		}
	}
}

func checkBypass(t *testing.T, out string) {
	t.Helper()
	if !strings.Contains(out, "BYPASS rc=7") {
		t.Errorf("UID %s: want connection refused (curl exit 7: not redirected, no real IMDS here), got:\n%s", imageEnv(t)["PROXY_UID"], out)
	}
}

// checkToken parses the client's output: the probe line, the token JSON and
// the HTTP status, and asserts the token the emulator issued for the pod's
// identity and the requested resource.
func checkToken(t *testing.T, p pod, out string) {
	t.Helper()
	m := regexp.MustCompile(`(?s)PROBE (\d{3}) after \d+ tries\n(.*)\nHTTP (\d{3})\nCURL rc=0\nQUIT HTTP 200\n$`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("client output not as expected:\n%s", out)
	}
	if m[1] == "000" {
		t.Fatalf("the proxy never answered on 169.254.169.254:80:\n%s", out)
	}
	if m[3] != "200" {
		t.Fatalf("token request: HTTP %s, body %s", m[3], m[2])
	}
	var body map[string]any
	if err := json.Unmarshal([]byte(m[2]), &body); err != nil {
		t.Fatalf("token body is not JSON: %v: %s", err, m[2])
	}
	str := map[string]string{}
	for k, v := range body {
		s, ok := v.(string)
		if !ok {
			t.Errorf("%s is %T, want a string (IMDS sends every value as a string)", k, v)
		}
		str[k] = s
	}
	want := map[string]string{"resource": resource, "token_type": "Bearer", "client_id": p.clientID, "refresh_token": ""}
	for k, v := range want {
		if got, ok := str[k]; !ok || got != v {
			t.Errorf("%s = %q (present %v), want %q", k, got, ok, v)
		}
	}
	now := time.Now().Unix()
	expiresOn, err1 := strconv.ParseInt(str["expires_on"], 10, 64)
	expiresIn, err2 := strconv.ParseInt(str["expires_in"], 10, 64)
	notBefore, err3 := strconv.ParseInt(str["not_before"], 10, 64)
	if err1 != nil || err2 != nil || err3 != nil {
		t.Fatalf("expires_on %q, expires_in %q, not_before %q: want Unix seconds and seconds", str["expires_on"], str["expires_in"], str["not_before"])
	}
	if expiresIn <= 0 || expiresIn > 3600 || expiresOn < now+expiresIn-120 || expiresOn > now+expiresIn+120 || notBefore > now+60 {
		t.Errorf("expires_in %d, expires_on %d, not_before %d, now %d: inconsistent with a fresh 1 h token", expiresIn, expiresOn, notBefore, now)
	}
	for k := range str {
		if strings.HasPrefix(k, "error") || k == "scope" {
			t.Errorf("unexpected key %q", k)
		}
	}
	// The access token is the emulator's JWT for this tenant, app and resource.
	parts := strings.Split(str["access_token"], ".")
	if len(parts) != 3 {
		t.Fatalf("access_token is not a JWT: %q", str["access_token"])
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var claims struct {
		Aud   string `json:"aud"`
		AppID string `json:"appid"`
		Tid   string `json:"tid"`
		Iss   string `json:"iss"`
		Exp   int64  `json:"exp"`
	}
	if err := json.Unmarshal(payload, &claims); err != nil {
		t.Fatalf("access token claims: %v: %s", err, payload)
	}
	wantIss := "https://sts.windows.net/" + p.tenant + "/"
	if claims.Aud != resource || claims.AppID != p.clientID || claims.Tid != p.tenant || claims.Iss != wantIss || claims.Exp != expiresOn {
		t.Errorf("access token claims %+v, want aud %s, appid %s, tid %s, iss %s, exp %d", claims, resource, p.clientID, p.tenant, wantIss, expiresOn)
	}
}
