package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
)

// ImageSize is one image built by build/images-local.sh.
type ImageSize struct {
	Name  string
	Bytes int64
}

// imagesPhase builds both images with build/images-local.sh under tags of
// its own, reads their sizes from podman and removes them again. The local
// proxy image is the binary and the CA bundle on scratch; Dockerfile.proxy
// puts the same two files on distroless/static, which adds its own few MB.
func (b *bench) imagesPhase(ctx context.Context) error {
	tag := "bench-" + strconv.Itoa(os.Getpid())
	images := []struct{ name, ref, env string }{
		{"proxy", "localhost/imds-proxy-bench/proxy:" + tag, "PROXY_IMAGE"},
		{"proxy-init", "localhost/imds-proxy-bench/proxy-init:" + tag, "INIT_IMAGE"},
	}
	env := os.Environ()
	for _, im := range images {
		env = append(env, im.env+"="+im.ref)
	}
	if goBin, err := exec.LookPath("go"); err == nil {
		env = append(env, "GO="+goBin)
	}
	logf("building the images (build/images-local.sh)")
	cmd := exec.CommandContext(ctx, filepath.Join(b.root, "build", "images-local.sh"), "all")
	cmd.Dir = b.root
	cmd.Env = env
	out, err := cmd.CombinedOutput()
	defer func() {
		for _, im := range images {
			_ = exec.Command("podman", "rmi", "--force", im.ref).Run()
		}
	}()
	if err != nil {
		return fmt.Errorf("build/images-local.sh: %w: %s", err, tailLines(string(out), 5))
	}
	for _, im := range images {
		out, err := exec.CommandContext(ctx, "podman", "image", "inspect", "--format", "{{.Size}}", im.ref).Output()
		if err != nil {
			return fmt.Errorf("podman image inspect %s: %w", im.ref, err)
		}
		n, err := strconv.ParseInt(strings.TrimSpace(string(out)), 10, 64)
		if err != nil {
			return fmt.Errorf("podman image inspect %s: size %q", im.ref, out)
		}
		b.rep.Images = append(b.rep.Images, ImageSize{Name: im.name, Bytes: n})
	}
	return nil
}

func tailLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, " | ")
}
