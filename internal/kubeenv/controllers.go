package kubeenv

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/imds-proxy/imds-proxy/internal/podenv"
)

// controllerManagerPort is kube-controller-manager's secure port (health
// and metrics), on BindAddress inside the cluster's namespace.
const controllerManagerPort = 10257

// startControllerManager runs kube-controller-manager with only the named
// controllers (e.g. "job" for Jobs, "serviceaccount" for each namespace's
// default ServiceAccount, "root-ca-cert-publisher" for its kube-root-ca.crt
// ConfigMap), as the admin user, without leader election, and waits until
// its health endpoint answers.
func (c *Cluster) startControllerManager(ctx context.Context, bin string, controllers []string) error {
	args := []string{
		bin,
		"--kubeconfig=" + c.Kubeconfig,
		"--controllers=" + strings.Join(controllers, ","),
		"--root-ca-file=" + c.CAFile,
		"--service-account-private-key-file=" + filepath.Join(c.Dir, "sa-key.pem"),
		"--use-service-account-credentials=false",
		"--leader-elect=false",
		"--bind-address=" + BindAddress,
		"--secure-port=" + strconv.Itoa(controllerManagerPort),
		"--cert-dir=" + filepath.Join(c.Dir, "controller-manager"),
		"--profiling=false",
	}
	p, err := c.spawn(podenv.NetnsExec(c.Netns, -1, args...), c.ControllerManagerLog, &c.controllerManager)
	if err != nil {
		return fmt.Errorf("start kube-controller-manager: %w", err)
	}
	hc := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{
		DialContext:       podenv.NetnsDialer(c.Netns),
		DisableKeepAlives: true,
		// Its serving certificate is self-signed at start and reachable
		// only inside the namespace.
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, //nolint:gosec // see above
	}}
	url := "https://" + net.JoinHostPort(BindAddress, strconv.Itoa(controllerManagerPort)) + "/healthz"
	wctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	return p.WaitReady(wctx, func() bool {
		req, _ := http.NewRequestWithContext(wctx, http.MethodGet, url, nil)
		resp, err := hc.Do(req)
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 64))
		return resp.StatusCode == http.StatusOK && string(b) == "ok"
	}, ControllerManagerBin, c.ControllerManagerLog)
}
