package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/imds-proxy/imds-proxy/internal/entraemu"
)

func TestParseApp(t *testing.T) {
	cases := []struct {
		in      string
		want    entraemu.App
		wantErr bool
	}{
		{in: "c1", want: entraemu.App{ClientID: "c1"}},
		{in: "c1,o1", want: entraemu.App{ClientID: "c1", ObjectID: "o1"}},
		{in: " c1 , o1 , /subscriptions/s/rg/x ", want: entraemu.App{ClientID: "c1", ObjectID: "o1", ResourceID: "/subscriptions/s/rg/x"}},
		{in: "c1,,/subscriptions/s", want: entraemu.App{ClientID: "c1", ResourceID: "/subscriptions/s"}},
		{in: "c1,o1,", want: entraemu.App{ClientID: "c1", ObjectID: "o1"}},
		{in: "", wantErr: true},
		{in: ",o1", wantErr: true},
		{in: "c1,o1,r1", wantErr: true},
		{in: "c1,o1,/r,extra", wantErr: true},
		{in: "c/1", wantErr: true},
		{in: "c 1", wantErr: true},
		{in: "c%2F1", wantErr: true},
	}
	for _, tc := range cases {
		got, err := parseApp(tc.in)
		if (err != nil) != tc.wantErr || (err == nil && (got.ClientID != tc.want.ClientID || got.ObjectID != tc.want.ObjectID || got.ResourceID != tc.want.ResourceID)) {
			t.Errorf("parseApp(%q) = %+v, %v; want %+v, error %v", tc.in, got, err, tc.want, tc.wantErr)
		}
	}
}

func FuzzParseApp(f *testing.F) {
	f.Add("c1,o1,/subscriptions/s")
	f.Add(",,,")
	f.Fuzz(func(t *testing.T, in string) {
		a, err := parseApp(in)
		if err != nil {
			return
		}
		if a.ClientID == "" || strings.ContainsAny(a.ClientID, "/?#% \t,") || strings.Contains(a.ObjectID, ",") ||
			(a.ResourceID != "" && !strings.HasPrefix(a.ResourceID, "/")) {
			t.Fatalf("parseApp(%q) accepted %+v", in, a)
		}
	})
}

func TestParseFlags(t *testing.T) {
	c, err := parseFlags([]string{
		"--tenant=t1", "--app=c1,o1,/r1", "--app=c2", "--app-unfederated=c3",
		"--federate-subject=system:serviceaccount:a:b", "--federate-subject=system:serviceaccount:a:c",
		"--federate-audience=api://X", "--invalid-resource=https://bad", "--token-lifetime=5m", "--admin",
		"--extra-host=login.microsoftonline.com",
	}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	o := c.opts
	if o.Tenant != "t1" || o.TokenLifetime != 5*time.Minute || !o.EnableAdmin || len(o.Apps) != 3 || len(o.InvalidResources) != 1 ||
		len(o.ExtraHosts) != 1 {
		t.Fatalf("options %+v", o)
	}
	if f := o.Apps[0].Federations; len(f) != 2 || f[1].Subject != "system:serviceaccount:a:c" || f[1].Audience != "api://X" || f[1].Issuer != "" {
		t.Errorf("federations %+v", f)
	}
	if len(o.Apps[1].Federations) != 2 || len(o.Apps[2].Federations) != 0 {
		t.Errorf("apps %+v", o.Apps)
	}
	for _, bad := range [][]string{
		{"--app=c/1"}, {"--log-level=trace"}, {"--sa-token-refresh=1s"}, {"--sa-token-lifetime=0s"},
		{"--token-lifetime=soon"}, {"extra"}, {"--unknown"},
	} {
		if _, err := parseFlags(bad, io.Discard); err == nil {
			t.Errorf("parseFlags(%q) accepted", bad)
		}
	}
}

// TestRun starts the command in-process on loopback, exchanges the token it
// wrote through its token endpoint, uses the admin socket, watches the
// token rotate, and stops it.
func TestRun(t *testing.T) {
	dir := t.TempDir()
	ca, tokFile, info, sock := filepath.Join(dir, "ca.pem"), filepath.Join(dir, "token"), filepath.Join(dir, "info.json"), filepath.Join(dir, "admin.sock")
	const tenant, client = "tt-1", "c0ffee00-1111-4000-8000-000000000001"
	args := []string{
		"--tenant=" + tenant, "--app=" + client + ",o1", "--federate-subject=system:serviceaccount:ns:sa",
		"--ca-out=" + ca, "--sa-token-out=" + tokFile, "--sa-token-namespace=ns", "--sa-token-name=sa",
		"--sa-token-refresh=20ms", "--admin", "--admin-socket=" + sock, "--info-out=" + info,
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		err := run(ctx, args, pw, io.Discard)
		pw.Close()
		done <- err
	}()
	line, err := bufio.NewReader(pr).ReadString('\n')
	if err != nil {
		t.Fatalf("ready line: %v", err)
	}
	go func() { _, _ = io.Copy(io.Discard, pr) }()
	var ready readyLine
	if err := json.Unmarshal([]byte(line), &ready); err != nil {
		t.Fatalf("ready line %q: %v", line, err)
	}
	if ready.Tenant != tenant || ready.CAFile != ca || ready.SATokenFile != tokFile || ready.AdminSocket != sock ||
		ready.AdminURL != ready.IssuerURL+"/admin/" || ready.Authority != ready.AuthorityHost+tenant || ready.PID != os.Getpid() {
		t.Errorf("ready %+v", ready)
	}
	if b, err := os.ReadFile(info); err != nil || string(b) != line {
		t.Errorf("info file %q, %v", b, err)
	}

	pem, err := os.ReadFile(ca)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		t.Fatal("CA file holds no certificate")
	}
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	defer hc.CloseIdleConnections()
	first, err := os.ReadFile(tokFile)
	if err != nil {
		t.Fatal(err)
	}
	form := url.Values{
		"grant_type": {"client_credentials"}, "client_id": {client}, "scope": {"https://vault.azure.net/.default"},
		"client_assertion_type": {"urn:ietf:params:oauth:client-assertion-type:jwt-bearer"}, "client_assertion": {string(first)},
	}
	resp, err := hc.PostForm(ready.TokenEndpoint, form)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(body), `"token_type":"Bearer"`) {
		t.Fatalf("token: %d %s", resp.StatusCode, body)
	}

	uc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", sock)
	}}}
	defer uc.CloseIdleConnections()
	resp, err = uc.Get("http://admin/admin/calls?client_id=" + client + "&scope=https://vault.azure.net/.default")
	if err != nil {
		t.Fatal(err)
	}
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(body), `"calls":1`) {
		t.Errorf("admin socket calls: %s", body)
	}

	// The token file is rewritten (wait for the event, not for a time).
	for {
		b, err := os.ReadFile(tokFile)
		if err == nil && len(b) > 0 && string(b) != string(first) {
			break
		}
		if ctx.Err() != nil {
			t.Fatal("context ended")
		}
		time.Sleep(5 * time.Millisecond)
	}

	cancel()
	if err := <-done; err != nil {
		t.Fatalf("run returned %v", err)
	}
	if _, err := os.Stat(sock); !os.IsNotExist(err) {
		t.Errorf("admin socket left behind: %v", err)
	}
}
