package kubeenv_test

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/imds-proxy/imds-proxy/internal/kubeenv"
	"github.com/imds-proxy/imds-proxy/internal/kubeenv/kubeenvtest"
)

// TestControllers: with Options.Controllers the controller manager runs
// only those controllers: a new namespace gets its default ServiceAccount
// and its kube-root-ca.crt ConfigMap (holding the cluster's CA), and Close
// stops it with the rest.
func TestControllers(t *testing.T) {
	c := kubeenvtest.Start(t, kubeenv.Options{Controllers: []string{"serviceaccount", "root-ca-cert-publisher"}})
	ctx := context.Background()
	if c.PIDs()[kubeenv.ControllerManagerBin] == 0 {
		t.Fatalf("no %s running: %v", kubeenv.ControllerManagerBin, c.PIDs())
	}
	if err := c.CreateNamespace(ctx, "controllers", nil); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(time.Minute)
	var sa corev1.ServiceAccount
	var cm corev1.ConfigMap
	for {
		errSA := c.Do(ctx, http.MethodGet, "/api/v1/namespaces/controllers/serviceaccounts/default", nil, &sa)
		errCM := c.Do(ctx, http.MethodGet, "/api/v1/namespaces/controllers/configmaps/kube-root-ca.crt", nil, &cm)
		if errSA == nil && errCM == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after a minute: default ServiceAccount: %v; kube-root-ca.crt: %v", errSA, errCM)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if got := strings.TrimSpace(cm.Data["ca.crt"]); got != strings.TrimSpace(string(c.CACertPEM)) {
		t.Errorf("kube-root-ca.crt holds %q, want the cluster CA", got)
	}
	pid := c.PIDs()[kubeenv.ControllerManagerBin]
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("%s (pid %d) still running after Close", kubeenv.ControllerManagerBin, pid)
	}
}
