// Command sandbox runs imds-proxy for real on this machine, shaped like a
// Kubernetes pod with Azure Workload Identity, and shows what an app in the
// pod gets from IMDS.
//
// It builds proxy, proxy-init and the Entra emulator, creates a "node" and a
// "pod" network namespace joined by a link-local veth (the node holds
// 169.254.169.254 and the emulator), runs proxy-init in the pod as root and
// the proxy as UID 1501, then runs, inside the pod as UID 1000,
//
//	curl -sS -H Metadata:true "http://169.254.169.254/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https://vault.azure.net"
//
// and prints the answer and the access token's decoded claims. With KEEP=1
// it leaves everything running, prints the command that opens a shell in
// the pod, and waits for Ctrl-C. It always tears down (processes, then
// namespaces, then /etc/netns entries) on exit, Ctrl-C or SIGTERM.
//
// It needs Linux, root, Go, and ip, iptables, setpriv and curl
// (hack/install-deps.sh). Run it from the repository: `sudo make sandbox`
// or `sudo go run ./test/sandbox`. Nothing leaves the two namespaces.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"syscall"

	"github.com/imds-proxy/imds-proxy/internal/podenv"
)

const (
	appUID   = 1000
	tokenURL = "http://169.254.169.254/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https://vault.azure.net"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Getenv("KEEP") == "1")
	stop()
	if err != nil {
		fmt.Fprintf(os.Stderr, "sandbox: %v\n", err)
		os.Exit(1)
	}
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "==> "+format+"\n", args...)
}

func run(ctx context.Context, keep bool) (err error) {
	if os.Geteuid() != 0 {
		return errors.New("needs root (network namespaces, iptables, setuid): run `sudo make sandbox`")
	}
	for _, tool := range []string{"ip", "iptables", "setpriv", "curl"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("%s not found: run hack/install-deps.sh first", tool)
		}
	}
	binDir, err := podenv.TempDir("sandbox-bin")
	if err != nil {
		return err
	}
	defer os.RemoveAll(binDir)
	logf("building proxy, proxy-init and the Entra emulator")
	if err := podenv.Build(ctx, binDir); err != nil {
		return err
	}

	env, err := podenv.Start(ctx, podenv.Options{
		BinDir:   binDir,
		ClientID: podenv.DefaultClientID,
		Logf:     logf,
	})
	if err != nil {
		return err
	}
	defer func() {
		logf("tearing down: processes, namespaces %s and %s, /etc/netns entries", env.Pod, env.Node)
		err = errors.Join(err, env.Close())
	}()
	logf("pod netns %s (169.254.99.2), node netns %s (169.254.99.1, 169.254.169.254)", env.Pod, env.Node)
	logf("proxy-init ran in the pod; proxy runs as UID %d; emulator at %s", env.ProxyUID, env.AuthorityHost)

	logf("inside the pod as UID %d: curl -sS -H Metadata:true %q", appUID, tokenURL)
	var stderr bytes.Buffer
	cmd := env.PodCommand(ctx, appUID, nil, "curl", "-sS", "--max-time", "60", "-H", "Metadata:true", tokenURL)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return fmt.Errorf("curl in the pod: %w: %s\nproxy log:\n%s", err, stderr.Bytes(), readFile(env.ProxyLog))
	}
	fmt.Printf("%s\n", out)

	var reply struct {
		AccessToken string `json:"access_token"`
	}
	if err := json.Unmarshal(out, &reply); err != nil || reply.AccessToken == "" {
		return fmt.Errorf("the answer is not a token (%v); proxy log:\n%s", err, readFile(env.ProxyLog))
	}
	claims, err := podenv.DecodeClaims(reply.AccessToken)
	if err != nil {
		return err
	}
	pretty, err := json.MarshalIndent(claims, "", "  ")
	if err != nil {
		return err
	}
	logf("access token claims (issued by the local Entra emulator)")
	fmt.Printf("%s\n", pretty)

	if !keep {
		logf("done; KEEP=1 leaves the pod running")
		return nil
	}
	logf("KEEP=1: the pod is running. Open a shell in it as UID %d with:\n\n    sudo %s\n\nthen for example: curl -sS -H Metadata:true %q\nproxy log: %s\nPress Ctrl-C to tear down.", appUID, env.ShellCommand(appUID), tokenURL, env.ProxyLog)
	<-ctx.Done()
	return nil
}

func readFile(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	return string(b)
}
