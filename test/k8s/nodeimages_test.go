package k8s

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/imds-proxy/imds-proxy/internal/gobuild"
	"github.com/imds-proxy/imds-proxy/internal/podenv"
)

// nodeImages are the image references the node runs and the archives that
// carry them into containerd.
type nodeImages struct {
	proxy, init string // build/images-local.sh: our two images
	app         string // a Debian app with curl and the Go SDK client
	pause       string // the sandbox image
	archives    []string
}

// systemCABundle is the host's CA bundle, which build/images-local.sh puts
// into the proxy image by default.
const systemCABundle = "/etc/ssl/certs/ca-certificates.crt"

// appClientPath is where the Go SDK client (test/e2e/clients/goclient)
// lives in the app image.
const appClientPath = "/usr/local/bin/goclient"

// buildNodeImages builds the node's images, pulling nothing, as archives
// in a directory of t:
//   - proxy and proxy-init with build/images-local.sh, the proxy's CA bundle
//     being the host's plus the emulator's CA (caFile): this cluster's Entra
//     is served under a private CA, as a sovereign or test cloud may be,
//     and the bundle is the image's only trust store;
//   - the app: build/images-local.sh's Debian root file system with curl
//     (the one test/podman's client uses, cached), plus the Go SDK client;
//   - the sandbox image: test/podman/pause, FROM scratch.
//
// buildah commits the app and pause images straight to archives. The
// images build/images-local.sh puts in the host's podman storage are saved
// to archives and removed at once; their tags carry this process's pid
// (imdsp-<pid>-<time>), so a later run removes those of a run killed in
// between (removeStaleImages).
func buildNodeImages(t *testing.T, caFile string) nodeImages {
	t.Helper()
	root, err := gobuild.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	// A cold debootstrap of the Debian root file systems can take minutes.
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	dir := t.TempDir()
	tag := fmt.Sprintf("imdsp-%d-%d", os.Getpid(), time.Now().UnixNano())
	im := nodeImages{
		proxy: nodeImageRepo + "/proxy:" + tag,
		init:  nodeImageRepo + "/proxy-init:" + tag,
		app:   nodeImageRepo + "/app:" + tag,
		pause: nodeImageRepo + "/pause:" + tag,
	}
	appBase := nodeImageRepo + "/app-base:" + tag
	conf := "CONTAINERS_CONF=" + filepath.Join(root, "build/containers.conf")
	run := func(env []string, name string, args ...string) string {
		t.Helper()
		return runIn(t, ctx, root, append([]string{conf}, env...), name, args...)
	}
	removeStaleImages(t, root, conf)
	stored := []string{im.proxy, im.init, appBase}
	t.Cleanup(func() { removeImages(t, root, conf, stored...) })

	ca, err := os.ReadFile(caFile)
	if err != nil {
		t.Fatal(err)
	}
	system, err := os.ReadFile(systemCABundle)
	if err != nil {
		t.Fatalf("%v (Debian package ca-certificates)", err)
	}
	bundle := filepath.Join(dir, "ca-bundle.crt")
	if err := os.WriteFile(bundle, append(append(system, '\n'), ca...), 0o644); err != nil {
		t.Fatal(err)
	}
	run([]string{"PROXY_IMAGE=" + im.proxy, "INIT_IMAGE=" + im.init, "VERSION=k8s-node-test", "CA_BUNDLE_SRC=" + bundle},
		"build/images-local.sh", "all")
	// The same root file system and packages as test/podman's client, so
	// both reuse one cache entry.
	run(nil, "build/images-local.sh", "debian", appBase, "rootfs-test-client", "iproute2,curl,ca-certificates")

	bin := filepath.Join(dir, "bin")
	if err := gobuild.Build(ctx, bin, "./test/e2e/clients/goclient", "./test/podman/pause"); err != nil {
		t.Fatal(err)
	}

	c := strings.TrimSpace(run(nil, "buildah", "from", "--pull-never", appBase))
	run(nil, "buildah", "copy", "--quiet", "--chmod", "0555", c, filepath.Join(bin, "goclient"), appClientPath)
	commitArchive := func(c, ref string) {
		t.Helper()
		archive := filepath.Join(dir, filepath.Base(strings.Split(ref, ":")[0])+".tar")
		run(nil, "buildah", "commit", "--quiet", "--rm", c, "docker-archive:"+archive+":"+ref)
		im.archives = append(im.archives, archive)
	}
	commitArchive(c, im.app)

	c = strings.TrimSpace(run(nil, "buildah", "from", "scratch"))
	run(nil, "buildah", "copy", "--quiet", "--chmod", "0555", c, filepath.Join(bin, "pause"), "/pause")
	run(nil, "buildah", "config", "--entrypoint", `["/pause"]`, c)
	commitArchive(c, im.pause)

	for _, ref := range []string{im.proxy, im.init} {
		archive := filepath.Join(dir, filepath.Base(strings.Split(ref, ":")[0])+".tar")
		run(nil, "podman", "save", "--quiet", "--format", "docker-archive", "-o", archive, ref)
		im.archives = append(im.archives, archive)
	}
	removeImages(t, root, conf, stored...)
	return im
}

// nodeImageRepo is where the node's images are named.
const nodeImageRepo = "localhost/imds-proxy-k8s"

// removeImages removes images from the host's podman storage; missing
// ones are fine.
func removeImages(t *testing.T, root, conf string, refs ...string) {
	t.Helper()
	for _, ref := range refs {
		if _, err := runErrIn(context.Background(), root, []string{conf}, "podman", "rmi", "--force", ref); err != nil && !strings.Contains(err.Error(), "image not known") {
			t.Logf("podman rmi %s: %v", ref, err)
		}
	}
}

// removeStaleImages removes the node images that runs killed before their
// cleanup left in the host's podman storage (tags imdsp-<pid>-... of a
// process that is gone).
func removeStaleImages(t *testing.T, root, conf string) {
	t.Helper()
	out, err := runErrIn(context.Background(), root, []string{conf}, "podman", "images", "--noheading",
		"--format", "{{.Repository}}:{{.Tag}}", "--filter", "reference="+nodeImageRepo+"/*")
	if err != nil {
		t.Logf("listing stale node images: %v", err)
		return
	}
	for _, ref := range strings.Fields(out) {
		if _, tag, ok := strings.Cut(ref, ":"); ok && podenv.StaleName(tag) {
			removeImages(t, root, conf, ref)
		}
	}
}

// runIn runs a command in dir and returns its stdout; a failure ends the
// test with both outputs.
func runIn(t *testing.T, ctx context.Context, dir string, env []string, name string, args ...string) string {
	t.Helper()
	out, err := runErrIn(ctx, dir, env, name, args...)
	if err != nil {
		t.Fatalf("%s %s: %v", name, strings.Join(args, " "), err)
	}
	return out
}

func runErrIn(ctx context.Context, dir string, env []string, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	// On timeout kill the whole group (debootstrap under images-local.sh).
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 10 * time.Second
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("%w\nstdout:\n%s\nstderr:\n%s", err, stdout.String(), stderr.String())
	}
	return stdout.String(), nil
}
