package k8s

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"

	"github.com/imds-proxy/imds-proxy/internal/entraemu"
	"github.com/imds-proxy/imds-proxy/internal/kubeenv"
	"github.com/imds-proxy/imds-proxy/internal/kubenode"
	"github.com/imds-proxy/imds-proxy/internal/podenv"
	"github.com/imds-proxy/imds-proxy/pkg/iptables"
)

// TestNode runs the deploy/ pods on a real kubelet (internal/kubenode)
// registered with the real API server, with containerd, runc and CNI
// making each pod and its network namespace, and the kubelet projecting
// the workload-identity token through TokenRequest. What users depend on
// and only a kubelet shows: native sidecar ordering, the postStart --probe
// hook gating the next container, the projected token, container logs,
// Jobs ending while their sidecar runs, and the capability-free layout with
// its Secret under Pod Security "restricted".
func TestNode(t *testing.T) {
	b := startNodeBed(t)

	t.Run("webhook pod", func(t *testing.T) { testWebhookPod(t, b) })
	t.Run("scenarios", func(t *testing.T) {
		t.Run("wrong subject", func(t *testing.T) { t.Parallel(); testWrongSubject(t, b) })
		t.Run("probe-strict", func(t *testing.T) { t.Parallel(); testProbeStrict(t, b) })
		t.Run("job with native sidecar", func(t *testing.T) { t.Parallel(); testJob(t, b, false) })
		t.Run("job with regular sidecar", func(t *testing.T) { t.Parallel(); testJob(t, b, true) })
		t.Run("no NET_ADMIN", func(t *testing.T) { t.Parallel(); testNoNetAdminPod(t, b) })
	})

	containerd, kubelet := b.node.Pids()
	for name, pid := range map[string]int{"containerd": containerd, "kubelet": kubelet} {
		if kib, err := rssKiB(pid); err == nil {
			t.Logf("RSS of %s after the scenarios: %.1f MiB", name, float64(kib)/1024)
		}
	}
	for name, pid := range b.cluster.PIDs() {
		if kib, err := rssKiB(pid); err == nil {
			t.Logf("RSS of %s after the scenarios: %.1f MiB", name, float64(kib)/1024)
		}
	}
}

// createPod stores pod in namespace and returns the stored object.
func (b *nodeBed) createPod(t *testing.T, namespace string, pod *corev1.Pod) corev1.Pod {
	t.Helper()
	var stored corev1.Pod
	if err := b.cluster.Create(context.Background(), namespace, pod, &stored); err != nil {
		t.Fatalf("creating pod %s: %v", pod.Name, err)
	}
	return stored
}

// containerLog returns a container's log lines (all its runs), as `kubectl
// logs` would show them.
func (b *nodeBed) containerLog(t *testing.T, p *corev1.Pod, name string) []kubenode.LogLine {
	t.Helper()
	lines, err := b.node.ContainerLog(p.Namespace, p.Name, string(p.UID), name)
	if err != nil {
		t.Fatal(err)
	}
	return lines
}

// waitLog waits until a container has logged a line starting with prefix
// and returns its texts.
func (b *nodeBed) waitLog(t *testing.T, p *corev1.Pod, name, prefix string, timeout time.Duration) []string {
	t.Helper()
	var texts []string
	b.waitFor(t, timeout, name+" logging "+prefix, func() (bool, string) {
		lines, err := b.node.ContainerLog(p.Namespace, p.Name, string(p.UID), name)
		if err != nil {
			cur := b.pod(t, p.Namespace, p.Name)
			return false, err.Error() + "; pod: " + podSummary(&cur)
		}
		texts = kubenode.Texts(lines)
		return slices.ContainsFunc(texts, func(s string) bool { return strings.HasPrefix(s, prefix) }), strings.Join(texts, "\n")
	})
	return texts
}

// testWebhookPod: the pod the webhook v1.6 makes, with an app init
// container, runs on the node as Kubernetes promises: the proxy starts
// first and its postStart probe holds the next container back until the
// cache is warm; the app's init container runs before any redirect exists
// and reaches the node's (fake) real IMDS; the app, as UID 1000 and
// unchanged, gets the emulator's token for the service account's identity
// from 169.254.169.254 with curl and with azidentity; the kubelet projected
// the token through TokenRequest; the proxy's log holds the startup
// diagnosis and no token.
func testWebhookPod(t *testing.T, b *nodeBed) {
	ctx := context.Background()
	clientID := b.sa.Annotations[clientIDAnnotation]
	pod := b.webhookPod(t, "legacy-app-webhook")
	created := time.Now()
	p := b.createPod(t, nodeNamespace, pod)
	b.waitFor(t, 3*time.Minute, "the app container running", func() (bool, string) {
		cur := b.pod(t, nodeNamespace, p.Name)
		s, ok := status(&cur, "app")
		return ok && s.State.Running != nil, podSummary(&cur)
	})
	t.Logf("pod created -> app container running: %s", time.Since(created).Round(time.Millisecond))
	appLog := b.waitLog(t, &p, "app", "app: done", 2*time.Minute)
	t.Logf("pod created -> app done (curl and azidentity answered): %s", time.Since(created).Round(time.Millisecond))
	p = b.pod(t, nodeNamespace, p.Name)

	// Status: the sidecar runs, both init containers completed, the app
	// runs; nothing restarted.
	want := map[string]func(corev1.ContainerStatus) bool{
		"azwi-proxy":      func(s corev1.ContainerStatus) bool { return s.State.Running != nil && s.Started != nil && *s.Started },
		"app-init":        exitedZero,
		"azwi-proxy-init": exitedZero,
		"app":             func(s corev1.ContainerStatus) bool { return s.State.Running != nil && s.Ready },
	}
	for name, ok := range want {
		s, found := status(&p, name)
		if !found || !ok(s) || s.RestartCount != 0 {
			t.Errorf("container %s: %s; pod: %s", name, stateString(s), podSummary(&p))
		}
	}
	if p.Status.Phase != corev1.PodRunning || !podCondition(&p, corev1.PodReady) || !podCondition(&p, corev1.PodInitialized) {
		t.Errorf("pod %s, conditions %+v; want Running, Initialized and Ready", p.Status.Phase, p.Status.Conditions)
	}
	// Its own network namespace, made by CNI: an address on the node's
	// bridge.
	if ip, err := netip.ParseAddr(p.Status.PodIP); err != nil || !kubenode.DefaultPodSubnet.Contains(ip) || ip == b.node.Gateway {
		t.Errorf("pod IP %q, want one of %s besides the gateway %s", p.Status.PodIP, kubenode.DefaultPodSubnet, b.node.Gateway)
	}

	// Order, from the runtime's own timestamps on each line: the probe's
	// warm-up answered, then the app's init container ran, then
	// azwi-proxy-init, then the app.
	proxyLog := b.containerLog(t, &p, "azwi-proxy")
	warm := firstLine(proxyLog, func(l kubenode.LogLine) bool { return strings.Contains(l.Text, `"msg":"warm-up token obtained"`) })
	steps := []struct {
		what string
		at   *kubenode.LogLine
	}{
		{"azwi-proxy's warm-up token (postStart --probe)", warm},
		{"app-init's first line", firstLine(b.containerLog(t, &p, "app-init"), anyLine)},
		{"azwi-proxy-init's first line", firstLine(b.containerLog(t, &p, "azwi-proxy-init"), anyLine)},
		{"app's first line", firstLine(b.containerLog(t, &p, "app"), anyLine)},
	}
	for i, s := range steps {
		if s.at == nil {
			t.Fatalf("no %s in the logs", s.what)
		}
		if i > 0 && !steps[i-1].at.Time.Before(s.at.Time) {
			t.Errorf("%s (%s) is not before %s (%s)", steps[i-1].what, steps[i-1].at.Time.Format(time.RFC3339Nano), s.what, s.at.Time.Format(time.RFC3339Nano))
		}
	}
	t.Logf("warm-up -> app-init %s -> azwi-proxy-init %s -> app %s",
		steps[1].at.Time.Sub(steps[0].at.Time).Round(time.Millisecond), steps[2].at.Time.Sub(steps[1].at.Time).Round(time.Millisecond),
		steps[3].at.Time.Sub(steps[2].at.Time).Round(time.Millisecond))

	// The app's init container reached the node's real IMDS, which knows
	// no such path; the request came from the pod's own address.
	initLog := kubenode.Texts(b.containerLog(t, &p, "app-init"))
	if want := `app-init: status=404 body={"error":"Not found"}`; !slices.Contains(initLog, want) {
		t.Errorf("app-init said %q, want %q (the fake real IMDS's answer)", initLog, want)
	}
	var fromPod []podenv.IMDSRequest
	for _, r := range b.env.IMDSRequests() {
		if host, _, _ := net.SplitHostPort(r.RemoteAddr); host == p.Status.PodIP {
			fromPod = append(fromPod, r)
		}
	}
	if len(fromPod) != 1 || !strings.HasPrefix(fromPod[0].RequestURI, "/metadata/identity/oauth2/token?") {
		t.Errorf("the fake real IMDS got %+v from the pod (%s), want app-init's one token request", fromPod, p.Status.PodIP)
	}

	// The app, as UID 1000, with curl and with the Go SDK.
	if !slices.Contains(appLog, "app: uid="+strconv.Itoa(appUID)) {
		t.Errorf("app log %q: want uid=%d", appLog, appUID)
	}
	curl := parseAppCurl(t, appLog)
	if curl.status != http.StatusOK || curl.body["client_id"] != clientID || curl.body["resource"] != vaultResource || curl.body["token_type"] != "Bearer" {
		t.Errorf("curl got %d %v; want 200 with client_id %s, resource %s", curl.status, curl.body, clientID, vaultResource)
	}
	if curl.claims["appid"] != clientID || curl.claims["aud"] != vaultResource || curl.claims["tid"] != b.env.Tenant || curl.claims["oid"] != defaultOID {
		t.Errorf("curl's access token claims %v; want appid %s, aud %s, tid %s, oid %s", curl.claims, clientID, vaultResource, b.env.Tenant, defaultOID)
	}
	sdk := parseGoClient(t, appLog)
	if sdk.Calls != 2 || !sdk.SameToken || sdk.Claims["appid"] != clientID || sdk.Claims["aud"] != vaultResource {
		t.Errorf("azidentity got %+v; want two calls, one token, appid %s, aud %s", sdk, clientID, vaultResource)
	}
	if sdk.TokenSHA256 != curl.sha256 {
		t.Errorf("azidentity's token (sha256 %s) is not curl's (%s): the proxy's cache should have served both", sdk.TokenSHA256, curl.sha256)
	}
	scope := vaultResource + "/.default"
	stats, err := b.env.CallStats(ctx, clientID, scope)
	if err != nil {
		t.Fatal(err)
	}
	if stats.Calls != 1 {
		t.Errorf("Entra calls for %s = %d, want 1", scope, stats.Calls)
	}
	reqs, err := b.env.Requests(ctx)
	if err != nil {
		t.Fatal(err)
	}
	i := slices.IndexFunc(reqs, func(r entraemu.TokenRequest) bool { return strings.EqualFold(r.ClientID, clientID) && r.Scope == scope })
	if i < 0 || reqs[i].Status != http.StatusOK || reqs[i].AssertionIssuer != kubeenv.Issuer || reqs[i].AssertionSubject != b.subject {
		t.Errorf("the emulator's requests %+v; want a 200 for %s with an assertion from %s, %s", reqs, scope, kubeenv.Issuer, b.subject)
	}

	// The token the kubelet projected through TokenRequest, where the
	// webhook's volume puts it.
	vol := v16VolumeName(&p)
	tokenPath := filepath.Join(b.node.KubeletRoot, "pods", string(p.UID), "volumes", "kubernetes.io~projected", vol, v16TokenPath)
	raw, err := b.node.ReadFile(tokenPath)
	if err != nil {
		t.Fatalf("the projected token: %v", err)
	}
	claims, err := podenv.DecodeClaims(string(raw))
	if err != nil {
		t.Fatal(err)
	}
	kube, _ := claims["kubernetes.io"].(map[string]any)
	boundPod, _ := kube["pod"].(map[string]any)
	boundNode, _ := kube["node"].(map[string]any)
	aud, _ := claims["aud"].([]any)
	if claims["iss"] != kubeenv.Issuer || claims["sub"] != b.subject || len(aud) != 1 || aud[0] != tokenAudience ||
		boundPod["name"] != p.Name || boundPod["uid"] != string(p.UID) || boundNode["name"] != b.node.Name {
		t.Errorf("projected token claims %v; want iss %s, sub %s, aud [%s], bound to pod %s (%s) on node %s", claims, kubeenv.Issuer, b.subject, tokenAudience, p.Name, p.UID, b.node.Name)
	}
	if exp, iat := claims["exp"], claims["iat"]; !lifetimeIs(exp, iat, defaultTokenExpiration) {
		t.Errorf("projected token exp %v iat %v; want %d s, the volume's expirationSeconds", exp, iat, defaultTokenExpiration)
	}

	// kubectl logs azwi-proxy: the startup diagnosis, the warm-up, no token.
	proxyTexts := kubenode.Texts(proxyLog)
	start := logLine(jsonLines(proxyTexts), "imds-proxy listening")
	if start == nil {
		t.Fatalf("no startup line in the proxy's log:\n%s", strings.Join(proxyTexts, "\n"))
	}
	if start["tokenIssuer"] != kubeenv.Issuer || start["tokenSubject"] != b.subject || !sameStrings(start["tokenAudience"], tokenAudience) ||
		start["uid"] != float64(1501) || start["clientID"] != clientID || start["tenantID"] != b.env.Tenant {
		t.Errorf("startup diagnosis %v; want issuer %s, subject %s, audience %s, uid 1501, client %s, tenant %s", start, kubeenv.Issuer, b.subject, tokenAudience, clientID, b.env.Tenant)
	}
	for _, l := range proxyTexts {
		if jwtLike.MatchString(l) || strings.Contains(l, strings.TrimSpace(string(raw))) {
			t.Errorf("the proxy's log holds a token: %.120s...", l)
		}
	}
	// kubectl logs azwi-proxy-init: the rules it applied, both tables.
	rulesLog := kubenode.Texts(b.containerLog(t, &p, "azwi-proxy-init"))
	for _, tr := range iptables.Plan(iptables.Config{ProxyPort: 8000, ProxyUID: 1501, MetadataIP: iptables.DefaultMetadataIP, MetadataPort: 80}).Tables {
		for _, r := range append([]iptables.Rule{tr.Jump}, tr.Rules...) {
			if !slices.Contains(rulesLog, r.String()) {
				t.Errorf("azwi-proxy-init's log lacks the %s rule %s:\n%s", tr.Table, r.String(), strings.Join(rulesLog, "\n"))
			}
		}
	}
}

// testWrongSubject: the webhook's pod in a namespace whose service account
// no federated credential names. It starts (the probe only reports), the
// proxy's container log names the presented issuer, subject and audience,
// and the app gets 400 Identity not found.
func testWrongSubject(t *testing.T, b *nodeBed) {
	subject := "system:serviceaccount:" + misfederatedNamespace + ":" + b.sa.Name
	p := b.createPod(t, misfederatedNamespace, b.webhookPod(t, "legacy-app-misfederated"))
	appLog := b.waitLog(t, &p, "app", "app: done", 3*time.Minute)
	curl := parseAppCurl(t, appLog)
	if desc := curl.body["error_description"]; curl.status != http.StatusBadRequest || curl.body["error"] != "invalid_request" ||
		!strings.HasPrefix(desc, "Identity not found") || !strings.Contains(desc, "AADSTS700213") {
		t.Errorf("the app got %d %v; want 400 invalid_request, Identity not found (AADSTS700213 ...)", curl.status, curl.body)
	}
	wantDiagnosis(t, kubenode.Texts(b.containerLog(t, &p, "azwi-proxy")), subject)
}

// wantDiagnosis asserts the proxy's error line for a failed warm-up: what
// the projected token presents, which a federated credential must match.
func wantDiagnosis(t *testing.T, proxyLog []string, subject string) {
	t.Helper()
	line := logLine(jsonLines(proxyLog), "warm-up token request from --probe failed")
	if line == nil {
		t.Fatalf("no warm-up diagnosis in the proxy's log:\n%s", strings.Join(proxyLog, "\n"))
	}
	if line["level"] != "error" || line["tokenIssuer"] != kubeenv.Issuer || line["tokenSubject"] != subject ||
		!sameStrings(line["tokenAudience"], tokenAudience) || line["aadsts"] != "AADSTS700213" {
		t.Errorf("diagnosis %v; want an error line naming issuer %s, subject %s, audience %s, AADSTS700213", line, kubeenv.Issuer, subject, tokenAudience)
	}
	if e, _ := line["err"].(string); !strings.Contains(e, "issuer="+kubeenv.Issuer+", subject="+subject+", audience="+tokenAudience) {
		t.Errorf("diagnosis err %q does not name the presented issuer, subject and audience", e)
	}
}

// testProbeStrict: with --probe-strict in the postStart hook
// (deploy/examples/pod-native-sidecar.yaml, the same misfederated
// account), the failed warm-up fails the hook: the kubelet kills and
// restarts the sidecar, and no later container ever starts.
func testProbeStrict(t *testing.T, b *nodeBed) {
	subject := "system:serviceaccount:" + misfederatedNamespace + ":" + b.sa.Name
	p := b.createPod(t, misfederatedNamespace, b.nativeSidecarPod(t, "legacy-app-strict", "--probe-strict"))
	b.waitFor(t, 3*time.Minute, "azwi-proxy restarted after its failed postStart hook", func() (bool, string) {
		p = b.pod(t, misfederatedNamespace, p.Name)
		s, _ := status(&p, "azwi-proxy")
		return s.RestartCount >= 1, podSummary(&p)
	})
	if p.Status.Phase != corev1.PodPending || podCondition(&p, corev1.PodInitialized) {
		t.Errorf("pod %s; want Pending and not Initialized: %s", p.Status.Phase, podSummary(&p))
	}
	for _, name := range []string{"azwi-proxy-init", "fetch-secret", "app"} {
		s, _ := status(&p, name)
		if s.State.Waiting == nil || s.LastTerminationState.Terminated != nil || s.RestartCount != 0 || (s.Started != nil && *s.Started) {
			t.Errorf("container %s: %s; want never started", name, stateString(s))
		}
	}
	var events corev1.EventList
	q := url.Values{"fieldSelector": {"involvedObject.name=" + p.Name}}
	if err := b.cluster.Do(context.Background(), http.MethodGet, "/api/v1/namespaces/"+misfederatedNamespace+"/events?"+q.Encode(), nil, &events); err != nil {
		t.Fatal(err)
	}
	// The event does not carry the hook's output (the kubelet keeps it out
	// of events, which many can read); its own log does, and the proxy's
	// container log has the diagnosis.
	if !slices.ContainsFunc(events.Items, func(e corev1.Event) bool {
		return e.Reason == "FailedPostStartHook" && e.Message == "PostStartHook failed"
	}) {
		t.Errorf("no FailedPostStartHook event for %s: %+v", p.Name, events.Items)
	}
	if kl, err := os.ReadFile(b.node.KubeletLog); err != nil || !strings.Contains(string(kl), "--probe-strict' exited with 1") || !strings.Contains(string(kl), "warm-up failed") {
		t.Errorf("the kubelet's log does not show the postStart hook exiting 1 with the probe's message (%v)", err)
	}
	wantDiagnosis(t, kubenode.Texts(b.containerLog(t, &p, "azwi-proxy")), subject)
}

// testJob: deploy/examples/job.yaml completes. With the native sidecar the
// kubelet stops azwi-proxy once the task has exited; with the regular
// sidecar layout the task's POST /quitquitquit ends it. Either way the pod
// succeeds and the Job controller marks the Job Complete.
func testJob(t *testing.T, b *nodeBed, regular bool) {
	ctx := context.Background()
	name := "legacy-task-native"
	if regular {
		name = "legacy-task-regular"
	}
	j := b.job(t, name, regular)
	created := time.Now()
	if err := b.cluster.Create(ctx, nodeNamespace, j, nil); err != nil {
		t.Fatal(err)
	}
	var job batchv1.Job
	b.waitFor(t, 4*time.Minute, "Job "+name+" Complete", func() (bool, string) {
		if err := b.cluster.Do(ctx, http.MethodGet, "/apis/batch/v1/namespaces/"+nodeNamespace+"/jobs/"+name, nil, &job); err != nil {
			return false, err.Error()
		}
		for _, c := range job.Status.Conditions {
			if c.Type == batchv1.JobFailed && c.Status == corev1.ConditionTrue {
				t.Fatalf("Job %s failed: %s %s", name, c.Reason, c.Message)
			}
			if c.Type == batchv1.JobComplete && c.Status == corev1.ConditionTrue {
				return true, ""
			}
		}
		return false, b.jobPodsSummary(t, name)
	})
	t.Logf("Job created -> Complete: %s", time.Since(created).Round(time.Millisecond))
	if job.Status.Succeeded != 1 || job.Status.Failed != 0 {
		t.Errorf("Job status succeeded %d failed %d, want 1 and 0", job.Status.Succeeded, job.Status.Failed)
	}
	pods := b.jobPods(t, name)
	if len(pods) != 1 {
		t.Fatalf("Job %s has %d pods, want 1: %s", name, len(pods), b.jobPodsSummary(t, name))
	}
	p := pods[0]
	if p.Status.Phase != corev1.PodSucceeded {
		t.Errorf("pod %s, want Succeeded", podSummary(&p))
	}
	task, _ := status(&p, "task")
	proxy, _ := status(&p, "azwi-proxy")
	if !exitedZero(task) || !exitedZero(proxy) {
		t.Errorf("task %s, azwi-proxy %s; want both exited 0", stateString(task), stateString(proxy))
	}
	if proxy.State.Terminated != nil && task.State.Terminated != nil {
		pf, tf := proxy.State.Terminated.FinishedAt, task.State.Terminated.FinishedAt
		if pf.Before(&tf) {
			t.Errorf("azwi-proxy finished at %s, before the task (%s)", pf, tf)
		}
		// With the native sidecar this is the proxy's --shutdown-delay
		// (5 s) after the kubelet's SIGTERM; the API has 1 s resolution.
		t.Logf("task exit -> azwi-proxy exit: %s", pf.Sub(tf.Time))
	}
	if got := kubenode.Texts(b.containerLog(t, &p, "task")); !slices.Contains(got, "task got an IMDS token: HTTP 200") {
		t.Errorf("task log %q, want its token line", got)
	}
	// Who ended the sidecar: the kubelet's SIGTERM, or /quitquitquit.
	proxyLog := jsonLines(kubenode.Texts(b.containerLog(t, &p, "azwi-proxy")))
	quit, term := logLine(proxyLog, "quit requested"), logLine(proxyLog, "shutting down")
	if regular && (quit == nil || term != nil) || !regular && (quit != nil || term == nil) {
		t.Errorf("regular sidecar %v: the proxy logged quit %v, SIGTERM shutdown %v", regular, quit, term)
	}
}

// jobPods lists the pods of a Job.
func (b *nodeBed) jobPods(t *testing.T, job string) []corev1.Pod {
	t.Helper()
	var list corev1.PodList
	q := url.Values{"labelSelector": {"batch.kubernetes.io/job-name=" + job}}
	if err := b.cluster.Do(context.Background(), http.MethodGet, "/api/v1/namespaces/"+nodeNamespace+"/pods?"+q.Encode(), nil, &list); err != nil {
		t.Fatal(err)
	}
	return list.Items
}

func (b *nodeBed) jobPodsSummary(t *testing.T, job string) string {
	var parts []string
	for _, p := range b.jobPods(t, job) {
		parts = append(parts, p.Name+": "+podSummary(&p))
	}
	return strings.Join(parts, " | ")
}

func exitedZero(s corev1.ContainerStatus) bool {
	return s.State.Terminated != nil && s.State.Terminated.ExitCode == 0
}

func podCondition(p *corev1.Pod, c corev1.PodConditionType) bool {
	for _, pc := range p.Status.Conditions {
		if pc.Type == c {
			return pc.Status == corev1.ConditionTrue
		}
	}
	return false
}

func anyLine(kubenode.LogLine) bool { return true }

// firstLine returns the first line matching, or nil.
func firstLine(lines []kubenode.LogLine, match func(kubenode.LogLine) bool) *kubenode.LogLine {
	for i := range lines {
		if match(lines[i]) {
			return &lines[i]
		}
	}
	return nil
}

// sameStrings reports whether v (a decoded JSON array) is exactly want.
func sameStrings(v any, want ...string) bool {
	a, ok := v.([]any)
	if !ok || len(a) != len(want) {
		return false
	}
	for i := range a {
		if a[i] != want[i] {
			return false
		}
	}
	return true
}

// lifetimeIs reports whether JSON numbers exp - iat equal seconds.
func lifetimeIs(exp, iat any, seconds int64) bool {
	e, ok1 := exp.(json.Number)
	i, ok2 := iat.(json.Number)
	if !ok1 || !ok2 {
		return false
	}
	en, err1 := e.Int64()
	in, err2 := i.Int64()
	return err1 == nil && err2 == nil && en-in == seconds
}
