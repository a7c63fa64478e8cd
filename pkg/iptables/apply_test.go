package iptables

import (
	"errors"
	"slices"
	"testing"

	"github.com/go-logr/logr/testr"
)

const meshRule = "-A OUTPUT -p tcp -j REDIRECT --to-ports 15001"

func TestApplyFresh(t *testing.T) {
	rs := Plan(defaultConfig())
	f := newFake()
	if err := Apply(testr.New(t), f, rs); err != nil {
		t.Fatalf("Apply() = %v", err)
	}
	wantCalls := []string{
		// the initial check stops early: nothing exists
		"exists nat IMDS_PROXY_OUTPUT", "exists nat IMDS_PROXY_REDIRECT", "list nat OUTPUT",
		"clear nat IMDS_PROXY_OUTPUT",
		"clear nat IMDS_PROXY_REDIRECT",
		"append nat " + rs.Rules[0].String(),
		"append nat " + rs.Rules[1].String(),
		"append nat " + rs.Rules[2].String(),
		"list nat OUTPUT",
		"insert nat 1 " + rs.Jump.String(),
		// verification
		"exists nat IMDS_PROXY_OUTPUT", "list nat IMDS_PROXY_OUTPUT",
		"exists nat IMDS_PROXY_REDIRECT", "list nat IMDS_PROXY_REDIRECT",
		"list nat OUTPUT",
	}
	if !slices.Equal(f.calls, wantCalls) {
		t.Errorf("calls:\n%q\nwant:\n%q", f.calls, wantCalls)
	}
	wantState := "PREROUTING:\nINPUT:\nOUTPUT:\n  " + rs.Jump.String() + "\nPOSTROUTING:\n" +
		"IMDS_PROXY_OUTPUT:\n  " + rs.Rules[0].String() + "\n  " + rs.Rules[1].String() + "\n" +
		"IMDS_PROXY_REDIRECT:\n  " + rs.Rules[2].String() + "\n"
	if got := f.dump(); got != wantState {
		t.Errorf("state:\n%s\nwant:\n%s", got, wantState)
	}
}

func TestApplyTwiceIsIdentical(t *testing.T) {
	rs := Plan(defaultConfig())
	f := newFake()
	f.chains["OUTPUT"] = []string{meshRule}
	if err := Apply(testr.New(t), f, rs); err != nil {
		t.Fatal(err)
	}
	once := f.dump()
	f.calls = nil
	if err := Apply(testr.New(t), f, rs); err != nil {
		t.Fatal(err)
	}
	if twice := f.dump(); twice != once {
		t.Errorf("second apply changed the state:\n%s\nwant:\n%s", twice, once)
	}
	// A second apply only reads: it finds everything in place.
	want := []string{
		"exists nat IMDS_PROXY_OUTPUT", "list nat IMDS_PROXY_OUTPUT",
		"exists nat IMDS_PROXY_REDIRECT", "list nat IMDS_PROXY_REDIRECT",
		"list nat OUTPUT",
	}
	if !slices.Equal(f.calls, want) {
		t.Errorf("second apply made calls %q, want %q", f.calls, want)
	}
}

func TestApplyRepairsTamperedChains(t *testing.T) {
	rs := Plan(defaultConfig())
	f := newFake()
	if err := Apply(testr.New(t), f, rs); err != nil {
		t.Fatal(err)
	}
	want := f.dump()
	f.chains[OutputChain] = f.chains[OutputChain][1:] // the UID exemption is gone
	f.chains[RedirectChain] = append(f.chains[RedirectChain], "-A IMDS_PROXY_REDIRECT -j RETURN")
	if err := Apply(testr.New(t), f, rs); err != nil {
		t.Fatal(err)
	}
	if got := f.dump(); got != want {
		t.Errorf("after repair:\n%s\nwant:\n%s", got, want)
	}
}

func TestApplyMovesJumpFirst(t *testing.T) {
	rs := Plan(defaultConfig())
	old := Plan(Config{ProxyPort: 9000, ProxyUID: 1501, MetadataIP: DefaultMetadataIP, MetadataPort: 80})
	tests := []struct {
		name   string
		output []string
		want   []string
	}{
		{"jump behind a mesh", []string{meshRule, rs.Jump.String()}, []string{rs.Jump.String(), meshRule}},
		{"duplicate jumps", []string{rs.Jump.String(), meshRule, rs.Jump.String()}, []string{rs.Jump.String(), meshRule}},
		{"stale jump from an older config", []string{old.Jump.String(), meshRule}, []string{rs.Jump.String(), meshRule}},
		{"stale jump matching by comment only", []string{meshRule, `-A OUTPUT -m comment --comment "imds-proxy: gone" -j RETURN`}, []string{rs.Jump.String(), meshRule}},
		{"foreign jump into a lookalike chain kept", []string{"-A OUTPUT -j IMDS_PROXY_OUTPUT2"}, []string{rs.Jump.String(), "-A OUTPUT -j IMDS_PROXY_OUTPUT2"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFake()
			f.chains["OUTPUT"] = slices.Clone(tt.output)
			if err := Apply(testr.New(t), f, rs); err != nil {
				t.Fatalf("Apply() = %v", err)
			}
			if got := f.chains["OUTPUT"]; !slices.Equal(got, tt.want) {
				t.Errorf("OUTPUT = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestApplyFailsClosedAtEveryStep(t *testing.T) {
	rs := Plan(defaultConfig())
	// Count the calls of a successful run on a namespace with a stale jump,
	// which exercises every kind of step, then fail each one in turn.
	probe := newFake()
	probe.chains["OUTPUT"] = []string{meshRule, rs.Jump.String()}
	if err := Apply(testr.New(t), probe, rs); err != nil {
		t.Fatal(err)
	}
	total := len(probe.calls)
	if total != 16 {
		t.Fatalf("successful run made %d calls, want 16: %q", total, probe.calls)
	}
	for i := 1; i <= total; i++ {
		f := newFake()
		f.chains["OUTPUT"] = []string{meshRule, rs.Jump.String()}
		f.failAt = i
		err := Apply(testr.New(t), f, rs)
		if !errors.Is(err, errInjected) {
			t.Errorf("failing call %d (%s): Apply() = %v, want the injected error", i, probe.calls[i-1], err)
		}
		if len(f.calls) != i {
			t.Errorf("failing call %d: Apply went on with %q", i, f.calls[i:])
		}
	}
}

func TestCheck(t *testing.T) {
	rs := Plan(defaultConfig())
	applied := func(output ...string) *fakeApplier {
		f := newFake()
		if err := Apply(testr.New(t), f, rs); err != nil {
			t.Fatal(err)
		}
		if output != nil {
			f.chains["OUTPUT"] = output
		}
		return f
	}
	tests := []struct {
		name string
		f    *fakeApplier
		want []string
	}{
		{"applied", applied(), nil},
		{"nothing applied", newFake(), []string{
			"chain IMDS_PROXY_OUTPUT does not exist",
			"chain IMDS_PROXY_REDIRECT does not exist",
			"chain OUTPUT has no jump to IMDS_PROXY_OUTPUT",
		}},
		{"jump not first", applied(meshRule, rs.Jump.String()), []string{
			"our jump is not first in chain OUTPUT: it is at position 2, behind [" + meshRule + "]",
		}},
		{"two jumps", applied(rs.Jump.String(), rs.Jump.String()), []string{
			"chain OUTPUT has 2 jumps into our chains (at positions 1, 2), want exactly one",
		}},
		{"different jump", applied("-A OUTPUT -j IMDS_PROXY_OUTPUT"), []string{
			"the jump in chain OUTPUT is [-A OUTPUT -j IMDS_PROXY_OUTPUT], want [" + rs.Jump.String() + "]",
		}},
	}
	extra := applied()
	extra.chains[RedirectChain] = append(extra.chains[RedirectChain], "-A IMDS_PROXY_REDIRECT -j RETURN")
	tests = append(tests, struct {
		name string
		f    *fakeApplier
		want []string
	}{"extra rule", extra, []string{
		"chain IMDS_PROXY_REDIRECT has an extra rule 2 [-A IMDS_PROXY_REDIRECT -j RETURN]",
	}})
	changed := applied()
	changed.chains[OutputChain] = changed.chains[OutputChain][1:]
	tests = append(tests, struct {
		name string
		f    *fakeApplier
		want []string
	}{"rule missing", changed, []string{
		"rule 1 of chain IMDS_PROXY_OUTPUT is [" + rs.Rules[1].String() + "], want [" + rs.Rules[0].String() + "]",
		"chain IMDS_PROXY_OUTPUT lacks rule 2 [" + rs.Rules[1].String() + "]",
	}})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := Check(tt.f, rs)
			if tt.want == nil {
				if err != nil {
					t.Fatalf("Check() = %v, want nil", err)
				}
				return
			}
			var drift *DriftError
			if !errors.As(err, &drift) {
				t.Fatalf("Check() = %v, want a *DriftError", err)
			}
			if !slices.Equal(drift.Problems, tt.want) {
				t.Errorf("problems:\n%q\nwant:\n%q", drift.Problems, tt.want)
			}
		})
	}
}

func TestCheckReadErrorIsNotDrift(t *testing.T) {
	f := newFake()
	f.failAt = 1
	err := Check(f, Plan(defaultConfig()))
	var drift *DriftError
	if !errors.Is(err, errInjected) || errors.As(err, &drift) {
		t.Fatalf("Check() = %v, want the injected error and no drift", err)
	}
}

func TestCleanup(t *testing.T) {
	rs := Plan(defaultConfig())
	f := newFake()
	f.chains["OUTPUT"] = []string{meshRule}
	f.chains["MESH"] = []string{"-A MESH -j RETURN"}
	f.order = append(f.order, "MESH")
	before := f.dump()
	if err := Apply(testr.New(t), f, rs); err != nil {
		t.Fatal(err)
	}
	f.chains["OUTPUT"] = append(f.chains["OUTPUT"], rs.Jump.String()) // a duplicate, too
	if err := Cleanup(testr.New(t), f, rs); err != nil {
		t.Fatalf("Cleanup() = %v", err)
	}
	if got := f.dump(); got != before {
		t.Errorf("after cleanup:\n%s\nwant the state before apply:\n%s", got, before)
	}
	f.calls = nil
	if err := Cleanup(testr.New(t), f, rs); err != nil {
		t.Fatalf("second Cleanup() = %v", err)
	}
	want := []string{"list nat OUTPUT", "exists nat IMDS_PROXY_OUTPUT", "exists nat IMDS_PROXY_REDIRECT"}
	if !slices.Equal(f.calls, want) {
		t.Errorf("second cleanup calls %q, want %q", f.calls, want)
	}
	if got := f.dump(); got != before {
		t.Errorf("second cleanup changed the state:\n%s", got)
	}
}

func TestCleanupFailsClosed(t *testing.T) {
	rs := Plan(defaultConfig())
	for i := 1; i <= 8; i++ {
		f := newFake()
		if err := Apply(testr.New(t), f, rs); err != nil {
			t.Fatal(err)
		}
		f.calls, f.failAt = nil, i
		if err := Cleanup(testr.New(t), f, rs); !errors.Is(err, errInjected) {
			t.Errorf("failing call %d: Cleanup() = %v, want the injected error", i, err)
		}
		if len(f.calls) != i {
			t.Errorf("failing call %d: Cleanup went on with %q", i, f.calls[i:])
		}
	}
}

// previousRelease is the ruleset of releases that let the proxy's UID
// leave our chain with RETURN instead of ACCEPT.
func previousRelease(rs Ruleset) Ruleset {
	prev := rs
	prev.Rules = slices.Clone(rs.Rules)
	prev.Rules[0].Target = []string{"-j", "RETURN"}
	return prev
}

func TestPreviousReleaseIsDriftAndReplaced(t *testing.T) {
	rs := Plan(defaultConfig())
	fresh := newFake()
	if err := Apply(testr.New(t), fresh, rs); err != nil {
		t.Fatal(err)
	}
	f := newFake()
	f.chains["OUTPUT"] = []string{meshRule}
	before := f.dump()
	if err := Apply(testr.New(t), f, previousRelease(rs)); err != nil {
		t.Fatal(err)
	}

	err := Check(f, rs)
	var drift *DriftError
	if !errors.As(err, &drift) {
		t.Fatalf("Check() = %v, want a *DriftError", err)
	}
	const uidRule = `-A IMDS_PROXY_OUTPUT -m owner --uid-owner 1501 -m comment --comment "imds-proxy: proxy UID 1501 reaches the real metadata service"`
	want := []string{"rule 1 of chain IMDS_PROXY_OUTPUT is [" + uidRule + " -j RETURN], want [" + uidRule + " -j ACCEPT]"}
	if !slices.Equal(drift.Problems, want) {
		t.Errorf("problems:\n%q\nwant:\n%q", drift.Problems, want)
	}

	// A rerun of the new release replaces it.
	if err := Apply(testr.New(t), f, rs); err != nil {
		t.Fatal(err)
	}
	if got := f.chains[OutputChain]; !slices.Equal(got, fresh.chains[OutputChain]) {
		t.Errorf("%s after the rerun = %q, want %q", OutputChain, got, fresh.chains[OutputChain])
	}
	if got := f.chains["OUTPUT"]; !slices.Equal(got, []string{rs.Jump.String(), meshRule}) {
		t.Errorf("OUTPUT after the rerun = %q", got)
	}
	if err := Check(f, rs); err != nil {
		t.Errorf("Check() after the rerun = %v", err)
	}

	// --cleanup of the new release removes the old ruleset too.
	g := newFake()
	g.chains["OUTPUT"] = []string{meshRule}
	if err := Apply(testr.New(t), g, previousRelease(rs)); err != nil {
		t.Fatal(err)
	}
	if err := Cleanup(testr.New(t), g, rs); err != nil {
		t.Fatal(err)
	}
	if got := g.dump(); got != before {
		t.Errorf("after cleanup:\n%s\nwant:\n%s", got, before)
	}
}
