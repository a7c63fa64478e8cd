package kubeenv

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"
)

// A small REST client for the API server: plain net/http and the
// k8s.io/api types, which is all the tests need (creating objects,
// server-side dry runs, TokenRequest) without client-go's dependency tree.

// maxResponseBytes bounds an API server answer the harness reads.
const maxResponseBytes = 8 << 20

// APIError is an error answer of the API server.
type APIError struct {
	// Code is the HTTP status.
	Code int
	// Reason is the Status object's machine-readable reason (Invalid,
	// BadRequest, Forbidden, NotFound...).
	Reason metav1.StatusReason
	// Message is the Status object's message, what kubectl prints after
	// "Error from server".
	Message string
}

// Error returns the status and the API server's message.
func (e *APIError) Error() string {
	return fmt.Sprintf("kube-apiserver: %d %s: %s", e.Code, e.Reason, e.Message)
}

// do sends one request to the API server, as admin when admin is set, and
// returns the status, the body and the Warning headers' texts.
func (c *Cluster) do(ctx context.Context, method, path, contentType string, body []byte, admin bool) (int, []byte, error) {
	status, b, _, err := c.doWarn(ctx, method, path, contentType, body, admin)
	return status, b, err
}

func (c *Cluster) doWarn(ctx context.Context, method, path, contentType string, body []byte, admin bool) (int, []byte, []string, error) {
	req, err := http.NewRequestWithContext(ctx, method, c.URL+path, bytes.NewReader(body))
	if err != nil {
		return 0, nil, nil, err
	}
	// API calls ask for JSON; an anonymous fetcher takes what comes (the
	// issuer's JWKS is application/jwk-set+json only).
	req.Header.Set("Accept", "*/*")
	if admin {
		req.Header.Set("Accept", "application/json")
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	if admin {
		req.Header.Set("Authorization", "Bearer "+c.AdminToken)
	}
	resp, err := c.client.Do(req)
	if err != nil {
		return 0, nil, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBytes))
	if err != nil {
		return 0, nil, nil, fmt.Errorf("%s %s: %w", method, path, err)
	}
	return resp.StatusCode, b, warnings(resp.Header), nil
}

// warnings extracts the texts of RFC 7234 Warning headers
// (`299 - "text"`), as the API server sends them.
func warnings(h http.Header) []string {
	var out []string
	for _, v := range h.Values("Warning") {
		_, text, ok := strings.Cut(v, " - ")
		if !ok {
			out = append(out, v)
			continue
		}
		if s, err := strconv.Unquote(text); err == nil {
			text = s
		}
		out = append(out, text)
	}
	return out
}

// apiError turns a non-2xx answer into an *APIError.
func apiError(status int, body []byte) error {
	var st metav1.Status
	if err := json.Unmarshal(body, &st); err != nil || st.Kind != "Status" {
		return &APIError{Code: status, Message: strings.TrimSpace(string(body))}
	}
	return &APIError{Code: status, Reason: st.Reason, Message: st.Message}
}

// Do sends method path as admin with in as the JSON body (nil for none;
// []byte is sent as it is) and decodes a 2xx answer into out (nil to
// discard it). Any other status is an *APIError.
func (c *Cluster) Do(ctx context.Context, method, path string, in, out any) error {
	var body []byte
	switch v := in.(type) {
	case nil:
	case []byte:
		body = v
	default:
		var err error
		if body, err = json.Marshal(in); err != nil {
			return err
		}
	}
	ct := ""
	if body != nil {
		ct = "application/json"
	}
	status, b, err := c.do(ctx, method, path, ct, body, true)
	if err != nil {
		return err
	}
	if status/100 != 2 {
		return apiError(status, b)
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			return fmt.Errorf("%s %s: decoding the answer: %w", method, path, err)
		}
	}
	return nil
}

// GetAnonymous sends GET path without credentials, as Entra fetches an
// issuer's discovery document and JWKS, and returns the status and body.
func (c *Cluster) GetAnonymous(ctx context.Context, path string) (int, []byte, error) {
	return c.do(ctx, http.MethodGet, path, "", nil, false)
}

// Create creates obj in namespace ("" for cluster-scoped kinds, or to use
// the object's own metadata.namespace) and decodes the stored object into
// out (nil to discard it). obj is a manifest ([]byte, YAML or JSON, one
// document) or a value that marshals to one, such as a *corev1.Pod with
// its TypeMeta set. The API server validates strictly: unknown or
// duplicate fields are errors (fieldValidation=Strict).
func (c *Cluster) Create(ctx context.Context, namespace string, obj, out any) error {
	_, err := c.create(ctx, namespace, obj, out, false)
	return err
}

// DryRun submits obj as Create does, with dryRun=All: the API server
// decodes, defaults, validates and admits it (admission plugins such as
// PodSecurity included), stores nothing, and answers the object it would
// have stored, decoded into out (nil to discard it). It returns the API
// server's warnings; a rejection is an *APIError carrying the API server's
// message.
func (c *Cluster) DryRun(ctx context.Context, namespace string, obj, out any) (warnings []string, err error) {
	return c.create(ctx, namespace, obj, out, true)
}

func (c *Cluster) create(ctx context.Context, namespace string, obj, out any, dryRun bool) ([]string, error) {
	doc, err := manifestJSON(obj)
	if err != nil {
		return nil, err
	}
	var head struct {
		APIVersion string `json:"apiVersion"`
		Kind       string `json:"kind"`
		Metadata   struct {
			Namespace string `json:"namespace"`
		} `json:"metadata"`
	}
	if err := json.Unmarshal(doc, &head); err != nil {
		return nil, fmt.Errorf("manifest: %w", err)
	}
	if head.APIVersion == "" || head.Kind == "" {
		return nil, errors.New("manifest has no apiVersion or kind")
	}
	if namespace == "" {
		namespace = head.Metadata.Namespace
	}
	path, err := c.collectionPath(ctx, head.APIVersion, head.Kind, namespace)
	if err != nil {
		return nil, err
	}
	q := url.Values{"fieldValidation": {"Strict"}}
	if dryRun {
		q.Set("dryRun", "All")
	}
	status, b, warns, err := c.doWarn(ctx, http.MethodPost, path+"?"+q.Encode(), "application/json", doc, true)
	if err != nil {
		return nil, err
	}
	if status/100 != 2 {
		return warns, apiError(status, b)
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			return warns, fmt.Errorf("decoding the created %s: %w", head.Kind, err)
		}
	}
	return warns, nil
}

// manifestJSON renders obj (a YAML or JSON manifest, or a value) as JSON.
func manifestJSON(obj any) ([]byte, error) {
	if b, ok := obj.([]byte); ok {
		doc, err := yaml.YAMLToJSON(b)
		if err != nil {
			return nil, fmt.Errorf("manifest: %w", err)
		}
		return doc, nil
	}
	return json.Marshal(obj)
}

// apiResource is what discovery says about a kind.
type apiResource struct {
	name       string // plural resource name, e.g. "pods"
	namespaced bool
}

// collectionPath returns the REST path of kind's collection, asking the
// API server's discovery once per kind.
func (c *Cluster) collectionPath(ctx context.Context, apiVersion, kind, namespace string) (string, error) {
	prefix := "/apis/" + apiVersion
	if apiVersion == "v1" {
		prefix = "/api/v1"
	}
	key := apiVersion + "/" + kind
	c.mu.Lock()
	r, ok := c.resources[key]
	c.mu.Unlock()
	if !ok {
		var list metav1.APIResourceList
		if err := c.Do(ctx, http.MethodGet, prefix, nil, &list); err != nil {
			return "", fmt.Errorf("discovery of %s: %w", apiVersion, err)
		}
		for _, res := range list.APIResources {
			if res.Kind == kind && !strings.Contains(res.Name, "/") {
				r, ok = apiResource{name: res.Name, namespaced: res.Namespaced}, true
				break
			}
		}
		if !ok {
			return "", fmt.Errorf("the API server serves no kind %s in %s", kind, apiVersion)
		}
		c.mu.Lock()
		c.resources[key] = r
		c.mu.Unlock()
	}
	if !r.namespaced {
		return prefix + "/" + r.name, nil
	}
	if namespace == "" {
		return "", fmt.Errorf("%s is namespaced: give a namespace", kind)
	}
	return prefix + "/namespaces/" + url.PathEscape(namespace) + "/" + r.name, nil
}

// CreateNamespace creates a namespace with labels (may be nil), such as
// pod-security.kubernetes.io/enforce.
func (c *Cluster) CreateNamespace(ctx context.Context, name string, labels map[string]string) error {
	ns := &corev1.Namespace{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Namespace"},
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels},
	}
	return c.Create(ctx, "", ns, nil)
}

// CreateServiceAccount creates a ServiceAccount with annotations (may be
// nil), such as the workload-identity client-id and tenant-id ones.
func (c *Cluster) CreateServiceAccount(ctx context.Context, namespace, name string, annotations map[string]string) error {
	sa := &corev1.ServiceAccount{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "ServiceAccount"},
		ObjectMeta: metav1.ObjectMeta{Name: name, Annotations: annotations},
	}
	return c.Create(ctx, namespace, sa, nil)
}

// RequestToken asks the TokenRequest API for a token of pod's service
// account bound to the pod (its name and uid, as the kubelet asks for
// projected tokens), for audience and expirationSeconds (the API server
// refuses less than 600). pod is the object as the API server stored it
// (Create's out), so its uid is known. The token is never logged.
func (c *Cluster) RequestToken(ctx context.Context, pod *corev1.Pod, audience string, expirationSeconds int64) (string, error) {
	if pod.Namespace == "" || pod.Name == "" || pod.UID == "" {
		return "", errors.New("RequestToken needs the stored pod (namespace, name and uid)")
	}
	sa := pod.Spec.ServiceAccountName
	if sa == "" {
		sa = "default"
	}
	tr := &authenticationv1.TokenRequest{
		TypeMeta: metav1.TypeMeta{APIVersion: "authentication.k8s.io/v1", Kind: "TokenRequest"},
		Spec: authenticationv1.TokenRequestSpec{
			Audiences:         []string{audience},
			ExpirationSeconds: &expirationSeconds,
			BoundObjectRef:    &authenticationv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: pod.Name, UID: pod.UID},
		},
	}
	path := "/api/v1/namespaces/" + url.PathEscape(pod.Namespace) + "/serviceaccounts/" + url.PathEscape(sa) + "/token"
	var got authenticationv1.TokenRequest
	if err := c.Do(ctx, http.MethodPost, path, tr, &got); err != nil {
		return "", fmt.Errorf("TokenRequest for %s/%s bound to pod %s: %w", pod.Namespace, sa, pod.Name, err)
	}
	if got.Status.Token == "" {
		return "", fmt.Errorf("TokenRequest for %s/%s: empty token", pod.Namespace, sa)
	}
	return got.Status.Token, nil
}
