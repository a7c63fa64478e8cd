package iptables

import (
	"slices"
	"strings"
	"testing"
)

func TestSplitRule(t *testing.T) {
	tests := []struct {
		name    string
		line    string
		want    []string
		wantErr bool
	}{
		{"empty", "", nil, false},
		{"spaces only", "   \t ", nil, false},
		{"plain", "-A OUTPUT -j RETURN", []string{"-A", "OUTPUT", "-j", "RETURN"}, false},
		{"repeated spaces", "-A  OUTPUT \t -j   RETURN ", []string{"-A", "OUTPUT", "-j", "RETURN"}, false},
		{"quoted comment", `-m comment --comment "imds-proxy: a b" -j X`, []string{"-m", "comment", "--comment", "imds-proxy: a b", "-j", "X"}, false},
		{"escaped quote", `--comment "say \"hi\""`, []string{"--comment", `say "hi"`}, false},
		{"escaped backslash", `--comment "a\\b"`, []string{"--comment", `a\b`}, false},
		{"backslash before other", `--comment "a\nb"`, []string{"--comment", `a\nb`}, false},
		{"empty quoted", `--comment ""`, []string{"--comment", ""}, false},
		{"quote inside word", `ab"c d"e`, []string{"abc de"}, false},
		{"unterminated", `--comment "open`, nil, true},
		{"trailing backslash in quote", `--comment "x\`, nil, true},
		{"escaped closing quote only", `"\"`, nil, true},
		{"unicode", `--comment "ü ✓"`, []string{"--comment", "ü ✓"}, false},
		{"nul byte", "a\x00b c", []string{"a\x00b", "c"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := splitRule(tt.line)
			if (err != nil) != tt.wantErr {
				t.Fatalf("splitRule(%q) error = %v, wantErr %v", tt.line, err, tt.wantErr)
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("splitRule(%q) = %q, want %q", tt.line, got, tt.want)
			}
		})
	}
}

func TestRuleStringRoundTrip(t *testing.T) {
	var rules []Rule
	for _, t := range Plan(defaultConfig()).Tables {
		rules = append(append(rules, t.Jump), t.Rules...)
	}
	for _, r := range rules {
		args, err := splitRule(r.String())
		if err != nil {
			t.Fatalf("splitRule(%q): %v", r.String(), err)
		}
		want := append([]string{"-A", r.Chain}, r.Spec()...)
		if !slices.Equal(args, want) {
			t.Errorf("splitRule(String()) = %q, want %q", args, want)
		}
	}
}

// FuzzSplitRule checks that quoting any argument list and splitting it again
// gives the same arguments, and that splitting arbitrary input never panics
// and yields arguments that survive a second round trip.
func FuzzSplitRule(f *testing.F) {
	for _, s := range []string{
		"", `-A OUTPUT -m comment --comment "imds-proxy: x" -j RETURN`, `"\"`, `a\\b "c\"d"`, "\x00\"\t",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if !strings.ContainsAny(s, " \t") {
			// A single argument without separators must round-trip through quote.
			got, err := splitRule(quote(s))
			if err != nil || len(got) != 1 || got[0] != s {
				t.Fatalf("splitRule(quote(%q)) = %q, %v", s, got, err)
			}
		}
		args, err := splitRule(s)
		if err != nil {
			return
		}
		q := make([]string, len(args))
		for i, a := range args {
			q[i] = quote(a)
		}
		again, err := splitRule(strings.Join(q, " "))
		if err != nil {
			t.Fatalf("re-splitting quoted %q: %v", args, err)
		}
		if !slices.Equal(again, args) && (len(again) != 0 || len(args) != 0) {
			t.Fatalf("round trip of %q gave %q", args, again)
		}
	})
}
