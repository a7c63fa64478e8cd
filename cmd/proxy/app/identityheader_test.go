package app

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/imds-proxy/imds-proxy/pkg/imds"
)

// secret32 is a valid App Service secret of the minimum length.
const secret32 = "0123456789abcdef0123456789abcdef"

// The secret comes from IDENTITY_HEADER (the variable the app gets) or from
// --identity-header-file and its variable, never from a flag of its own;
// from both is an error; a bad one is refused before the proxy listens,
// and no message carries it.
func TestIdentityHeaderOptions(t *testing.T) {
	t.Parallel()
	withEnv := func(kv ...string) map[string]string {
		m := map[string]string{}
		for k, v := range webhookEnv {
			m[k] = v
		}
		for i := 0; i+1 < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return m
	}
	tests := []struct {
		name       string
		env        map[string]string
		args       []string
		header     imds.IdentityHeader
		file       string
		source     string
		wantErr    string
		wantLogged string
	}{
		{"off", webhookEnv, nil, "", "", "", "", ""},
		{"IDENTITY_HEADER", withEnv("IDENTITY_HEADER", secret32), nil, secret32, "", "IDENTITY_HEADER", "", ""},
		{"empty IDENTITY_HEADER is unset", withEnv("IDENTITY_HEADER", ""), nil, "", "", "", "", ""},
		{"file flag", webhookEnv, []string{"-identity-header-file=/run/secrets/h"}, "", "/run/secrets/h", "--identity-header-file /run/secrets/h", "", ""},
		{"file variable", withEnv("IMDS_PROXY_IDENTITY_HEADER_FILE", "/run/secrets/h"), nil, "", "/run/secrets/h",
			"IMDS_PROXY_IDENTITY_HEADER_FILE /run/secrets/h", "", ""},
		{"both", withEnv("IDENTITY_HEADER", secret32), []string{"--identity-header-file", "/run/secrets/h"}, "", "", "",
			"IDENTITY_HEADER and --identity-header-file are both set: give the App Service endpoint's secret in one of them", ""},
		{"too short", withEnv("IDENTITY_HEADER", "hunter2-hunter2"), nil, "", "", "",
			"invalid IDENTITY_HEADER (the App Service endpoint's secret): is 15 characters long; at least 32 are required (e.g. openssl rand -hex 32)", ""},
		{"a space", withEnv("IDENTITY_HEADER", secret32+" hunter2"), nil, "", "", "",
			"invalid IDENTITY_HEADER (the App Service endpoint's secret): character 33 is not visible ASCII (0x21 to 0x7e), which a header value needs", ""},
		// A flag for the secret itself does not exist: it is an unknown
		// option, reported without its value.
		{"no secret flag", webhookEnv, []string{"--identity-header=hunter2-hunter2-hunter2-hunter2-x"}, "", "", "", "", `"flag":"--identity-header"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			res := execute(t, tt.env, tt.args...)
			if strings.Contains(res.log, "hunter2") || res.err != nil && strings.Contains(res.err.Error(), "hunter2") {
				t.Fatalf("the secret shows: err=%v log=%s", res.err, res.log)
			}
			if tt.wantErr != "" {
				if res.err == nil || res.err.Error() != tt.wantErr {
					t.Fatalf("error = %v\nwant %s", res.err, tt.wantErr)
				}
				return
			}
			if res.err != nil {
				t.Fatal(res.err)
			}
			c := res.cfg
			if c.IMDS.IdentityHeader != tt.header || c.IdentityHeaderFile != tt.file || c.IdentityHeaderSource != tt.source {
				t.Errorf("secret %q, file %q, source %q; want %q, %q, %q",
					string(c.IMDS.IdentityHeader), c.IdentityHeaderFile, c.IdentityHeaderSource, string(tt.header), tt.file, tt.source)
			}
			if tt.wantLogged != "" && !strings.Contains(res.log, tt.wantLogged) {
				t.Errorf("log lacks %s:\n%s", tt.wantLogged, res.log)
			}
		})
	}
}

func TestReadIdentityHeaderFile(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	tests := []struct {
		name    string
		content string
		want    imds.IdentityHeader
		wantErr string
	}{
		{"plain", secret32, secret32, ""},
		{"newline", secret32 + "\n", secret32, ""},
		{"CRLF", secret32 + "\r\n", secret32, ""},
		{"longest", strings.Repeat("k", 1024) + "\r\n", imds.IdentityHeader(strings.Repeat("k", 1024)), ""},
		{"two newlines", secret32 + "\n\n", "", "the secret character 33 is not visible ASCII (0x21 to 0x7e), which a header value needs"},
		{"leading space", " " + secret32, "", "the secret character 1 is not visible ASCII (0x21 to 0x7e), which a header value needs"},
		{"empty", "", "", "the secret is 0 characters long; at least 32 are required (e.g. openssl rand -hex 32)"},
		{"short", "hunter2\n", "", "the secret is 7 characters long; at least 32 are required (e.g. openssl rand -hex 32)"},
		{"too long", strings.Repeat("k", 1025), "", "the secret is 1025 characters long; at most 1024 are allowed"},
		{"huge", strings.Repeat("k", 1<<20), "", "is longer than 1026 bytes"},
		{"binary", secret32 + "\x00hunter2", "", "the secret character 33 is not visible ASCII (0x21 to 0x7e), which a header value needs"},
	}
	for i, tt := range tests {
		path := filepath.Join(dir, strings.ReplaceAll(tt.name, " ", "-"))
		if err := os.WriteFile(path, []byte(tt.content), 0o600); err != nil {
			t.Fatal(err)
		}
		got, err := readIdentityHeaderFile(path)
		if tt.wantErr != "" {
			if err == nil || err.Error() != tt.wantErr {
				t.Errorf("%d %s: error = %v; want %s", i, tt.name, err, tt.wantErr)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("%d %s: = %d characters, %v; want %d", i, tt.name, len(got), err, len(tt.want))
		}
	}
	if _, err := readIdentityHeaderFile(filepath.Join(dir, "missing")); err == nil || err.Error() != "no such file or directory" {
		t.Errorf("missing file: %v", err)
	}
	if _, err := readIdentityHeaderFile(dir); err == nil || err.Error() != "is a directory" {
		t.Errorf("directory: %v", err)
	}
}
