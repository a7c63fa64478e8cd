package clients

import (
	"reflect"
	"strings"
	"testing"
)

func TestParseResult(t *testing.T) {
	yes := true
	tests := []struct {
		name, out string
		want      Result
		wantErr   string
	}{
		{
			name: "goclient line with its newline",
			out:  `{"client":"go-msal","calls":2,"token_sha256":"ab","token_len":3,"same_token":true,"from_cache":true,"expires_on":1795493500,"claims":{"aud":"x"}}` + "\n",
			want: Result{Client: "go-msal", Calls: 2, TokenSHA256: "ab", TokenLen: 3, SameToken: true, FromCache: &yes, ExpiresOn: 1795493500, Claims: map[string]any{"aud": "x"}},
		},
		{
			name: "without from_cache",
			out:  `  {"client":"python-identity","calls":2,"same_token":false}  `,
			want: Result{Client: "python-identity", Calls: 2},
		},
		{name: "empty", out: "", wantErr: "not one JSON line"},
		{name: "two lines", out: "{}\n{}\n", wantErr: "not one JSON line"},
		{name: "a traceback", out: "Traceback (most recent call last):\n  ...", wantErr: "Traceback"},
		{name: "wrong type", out: `{"calls":"two"}`, wantErr: "not one JSON line"},
		{name: "an array", out: `[1,2]`, wantErr: "not one JSON line"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseResult(tt.out)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ParseResult = %+v, %v; want an error containing %q", got, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("ParseResult =\n%+v\nwant\n%+v", got, tt.want)
			}
		})
	}
}

// FuzzParseResult: any output gives a Result or an error, never a panic.
func FuzzParseResult(f *testing.F) {
	f.Add(`{"client":"go-msal","calls":2,"claims":{"aud":"x"}}`)
	f.Add("{}\n{}")
	f.Add(`{"from_cache":null,"expires_on":1e400}`)
	f.Fuzz(func(t *testing.T, out string) {
		if _, err := ParseResult(out); err != nil && !strings.Contains(err.Error(), "not one JSON line") {
			t.Errorf("error %v does not say what was wrong", err)
		}
	})
}
