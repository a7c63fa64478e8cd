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
// With -mode=appservice (`make sandbox MODE=appservice`) it shows the
// capability-free layout instead (docs/app-service.md): proxy-init never
// runs, the proxy gets a random IDENTITY_HEADER, and the app, given
// IDENTITY_ENDPOINT and the same IDENTITY_HEADER, runs
//
//	curl -sS -H "X-IDENTITY-HEADER: $IDENTITY_HEADER" "$IDENTITY_ENDPOINT?api-version=2019-08-01&resource=https://vault.azure.net"
//
// It needs Linux, root, Go, and ip, iptables, setpriv and curl
// (hack/install-deps.sh). Run it from the repository: `sudo make sandbox`
// or `sudo go run ./test/sandbox [-mode=appservice]`. Nothing leaves the
// two namespaces.
package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"syscall"

	"github.com/imds-proxy/imds-proxy/internal/podenv"
)

const (
	appUID   = 1000
	tokenURL = "http://169.254.169.254/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https://vault.azure.net"
	// appServiceCurl is what an app does in the App Service layout, with
	// the two variables it is given.
	appServiceCurl = `curl -sS -H "X-IDENTITY-HEADER: $IDENTITY_HEADER" "$IDENTITY_ENDPOINT?api-version=2019-08-01&resource=https://vault.azure.net"`
)

// The layouts the sandbox shows.
const (
	modeIMDS       = "imds"
	modeAppService = "appservice"
)

func main() {
	mode := flag.String("mode", modeIMDS, "layout to show: imds (proxy-init's redirect of 169.254.169.254) or appservice (no proxy-init; IDENTITY_ENDPOINT and IDENTITY_HEADER)")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	var err error
	switch *mode {
	case modeIMDS, modeAppService:
		err = run(ctx, *mode, os.Getenv("KEEP") == "1")
	default:
		err = fmt.Errorf("-mode %q: want %s or %s", *mode, modeIMDS, modeAppService)
	}
	stop()
	if err != nil {
		fmt.Fprintf(os.Stderr, "sandbox: %v\n", err)
		os.Exit(1)
	}
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "==> "+format+"\n", args...)
}

func run(ctx context.Context, mode string, keep bool) (err error) {
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

	opts := podenv.Options{
		BinDir:   binDir,
		ClientID: podenv.DefaultClientID,
		Logf:     logf,
	}
	// appEnv is what the app container is given beside PATH and HOME.
	var appEnv []string
	if mode == modeAppService {
		secret, err := randomSecret()
		if err != nil {
			return err
		}
		opts.SkipInit = true
		opts.ProxyEnv = []string{"IDENTITY_HEADER=" + secret}
		appEnv = []string{
			"IDENTITY_ENDPOINT=http://127.0.0.1:" + strconv.Itoa(podenv.DefaultProxyPort) + "/msi/token",
			"IDENTITY_HEADER=" + secret,
		}
	}
	env, err := podenv.Start(ctx, opts)
	if err != nil {
		return err
	}
	defer func() {
		logf("tearing down: processes, namespaces %s and %s, /etc/netns entries", env.Pod, env.Node)
		err = errors.Join(err, env.Close())
	}()
	logf("pod netns %s (169.254.99.2), node netns %s (169.254.99.1, 169.254.169.254)", env.Pod, env.Node)

	var stderr bytes.Buffer
	var cmd *exec.Cmd
	if mode == modeAppService {
		logf("proxy-init did not run: the pod has no iptables rule; proxy runs as UID %d with IDENTITY_HEADER set; emulator at %s", env.ProxyUID, env.AuthorityHost)
		logf("inside the pod as UID %d, with %s and IDENTITY_HEADER (a random secret the proxy has too): %s", appUID, appEnv[0], appServiceCurl)
		cmd = env.PodCommand(ctx, appUID, appEnv, "sh", "-c", appServiceCurl+" --max-time 60")
	} else {
		logf("proxy-init ran in the pod; proxy runs as UID %d; emulator at %s", env.ProxyUID, env.AuthorityHost)
		logf("inside the pod as UID %d: curl -sS -H Metadata:true %q", appUID, tokenURL)
		cmd = env.PodCommand(ctx, appUID, nil, "curl", "-sS", "--max-time", "60", "-H", "Metadata:true", tokenURL)
	}
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
	if mode == modeAppService {
		logf("KEEP=1: the pod is running. Open a shell in it as UID %d with:\n\n    sudo %s\n\nthen for example:\n\n    export %s %s\n    %s\n\nproxy log: %s\nPress Ctrl-C to tear down.",
			appUID, env.ShellCommand(appUID), appEnv[0], appEnv[1], appServiceCurl, env.ProxyLog)
	} else {
		logf("KEEP=1: the pod is running. Open a shell in it as UID %d with:\n\n    sudo %s\n\nthen for example: curl -sS -H Metadata:true %q\nproxy log: %s\nPress Ctrl-C to tear down.", appUID, env.ShellCommand(appUID), tokenURL, env.ProxyLog)
	}
	<-ctx.Done()
	return nil
}

// randomSecret returns a secret for IDENTITY_HEADER, as
// `openssl rand -hex 32` makes one.
func randomSecret() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return hex.EncodeToString(b), nil
}

func readFile(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	return string(b)
}
