package iptables

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/go-logr/logr/testr"
)

const (
	// meshRule is a service mesh's catch-all capture in nat OUTPUT.
	meshRule = "-A OUTPUT -p tcp -j REDIRECT --to-ports 15001"
	// policyRule is somebody else's rule in filter OUTPUT.
	policyRule = "-A OUTPUT -p tcp -m tcp --dport 25 -j REJECT --reject-with tcp-reset"
)

// parts returns the guard's and the redirect's tables of rs.
func parts(t *testing.T, rs Ruleset) (guard, redirect TableRules) {
	t.Helper()
	guard, ok := rs.Table(FilterTable)
	if !ok {
		t.Fatal("the plan has no filter table")
	}
	redirect, ok = rs.Table(NATTable)
	if !ok {
		t.Fatal("the plan has no nat table")
	}
	return guard, redirect
}

// appliedState is the dump of a fresh fake after applying rs.
func appliedState(t *testing.T, rs Ruleset) string {
	t.Helper()
	f := newFake()
	if err := Apply(testr.New(t), f, rs); err != nil {
		t.Fatal(err)
	}
	return f.dump()
}

func TestApplyFresh(t *testing.T) {
	rs := Plan(defaultConfig())
	guard, redirect := parts(t, rs)
	f := newFake()
	if err := Apply(testr.New(t), f, rs); err != nil {
		t.Fatalf("Apply() = %v", err)
	}
	wantCalls := []string{
		// the initial check stops early: nothing exists
		"exists filter IMDS_PROXY_GUARD", "list filter OUTPUT",
		"exists nat IMDS_PROXY_OUTPUT", "exists nat IMDS_PROXY_REDIRECT", "list nat OUTPUT",
		// the guard first
		"clear filter IMDS_PROXY_GUARD",
		"append filter " + guard.Rules[0].String(),
		"append filter " + guard.Rules[1].String(),
		"list filter OUTPUT",
		"insert filter 1 " + guard.Jump.String(),
		// then the redirect
		"clear nat IMDS_PROXY_OUTPUT",
		"clear nat IMDS_PROXY_REDIRECT",
		"append nat " + redirect.Rules[0].String(),
		"append nat " + redirect.Rules[1].String(),
		"append nat " + redirect.Rules[2].String(),
		"list nat OUTPUT",
		"insert nat 1 " + redirect.Jump.String(),
		// verification
		"exists filter IMDS_PROXY_GUARD", "list filter IMDS_PROXY_GUARD", "list filter OUTPUT",
		"exists nat IMDS_PROXY_OUTPUT", "list nat IMDS_PROXY_OUTPUT",
		"exists nat IMDS_PROXY_REDIRECT", "list nat IMDS_PROXY_REDIRECT",
		"list nat OUTPUT",
	}
	if !slices.Equal(f.calls, wantCalls) {
		t.Errorf("calls:\n%q\nwant:\n%q", f.calls, wantCalls)
	}
	wantState := "*filter\nINPUT:\nFORWARD:\nOUTPUT:\n  " + guard.Jump.String() + "\n" +
		"IMDS_PROXY_GUARD:\n  " + guard.Rules[0].String() + "\n  " + guard.Rules[1].String() + "\n" +
		"*nat\nPREROUTING:\nINPUT:\nOUTPUT:\n  " + redirect.Jump.String() + "\nPOSTROUTING:\n" +
		"IMDS_PROXY_OUTPUT:\n  " + redirect.Rules[0].String() + "\n  " + redirect.Rules[1].String() + "\n" +
		"IMDS_PROXY_REDIRECT:\n  " + redirect.Rules[2].String() + "\n"
	if got := f.dump(); got != wantState {
		t.Errorf("state:\n%s\nwant:\n%s", got, wantState)
	}
}

// readOnlyCheck is the calls of a Check that finds the default plan in place.
var readOnlyCheck = []string{
	"exists filter IMDS_PROXY_GUARD", "list filter IMDS_PROXY_GUARD", "list filter OUTPUT",
	"exists nat IMDS_PROXY_OUTPUT", "list nat IMDS_PROXY_OUTPUT",
	"exists nat IMDS_PROXY_REDIRECT", "list nat IMDS_PROXY_REDIRECT",
	"list nat OUTPUT",
}

func TestApplyTwiceIsIdentical(t *testing.T) {
	rs := Plan(defaultConfig())
	f := newFake()
	f.setChain(NATTable, "OUTPUT", meshRule)
	f.setChain(FilterTable, "OUTPUT", policyRule)
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
	if !slices.Equal(f.calls, readOnlyCheck) {
		t.Errorf("second apply made calls %q, want %q", f.calls, readOnlyCheck)
	}
}

func TestApplyRepairsTamperedChains(t *testing.T) {
	rs := Plan(defaultConfig())
	want := appliedState(t, rs)
	tests := []struct {
		name   string
		tamper func(f *fakeApplier)
		// writes are the tables Apply must write to; the others it only reads.
		writes []string
	}{
		{"UID exemption gone from nat", func(f *fakeApplier) {
			f.setChain(NATTable, OutputChain, f.chain(NATTable, OutputChain)[1:]...)
		}, []string{NATTable}},
		{"extra rule in nat", func(f *fakeApplier) {
			f.setChain(NATTable, RedirectChain, append(f.chain(NATTable, RedirectChain), "-A IMDS_PROXY_REDIRECT -j RETURN")...)
		}, []string{NATTable}},
		{"guard's refusal gone", func(f *fakeApplier) {
			f.setChain(FilterTable, GuardChain, f.chain(FilterTable, GuardChain)[:1]...)
		}, []string{FilterTable}},
		{"guard's jump gone", func(f *fakeApplier) {
			f.setChain(FilterTable, "OUTPUT")
		}, []string{FilterTable}},
		{"both", func(f *fakeApplier) {
			f.setChain(FilterTable, "OUTPUT")
			f.setChain(NATTable, "OUTPUT")
		}, []string{FilterTable, NATTable}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFake()
			if err := Apply(testr.New(t), f, rs); err != nil {
				t.Fatal(err)
			}
			tt.tamper(f)
			f.calls = nil
			if err := Apply(testr.New(t), f, rs); err != nil {
				t.Fatal(err)
			}
			if got := f.dump(); got != want {
				t.Errorf("after repair:\n%s\nwant:\n%s", got, want)
			}
			wrote := writtenTables(f.calls)
			if !slices.Equal(wrote, tt.writes) {
				t.Errorf("repair wrote to tables %q, want %q; calls %q", wrote, tt.writes, f.calls)
			}
		})
	}
}

// writtenTables lists, in order, the tables that the recorded calls changed.
func writtenTables(calls []string) []string {
	var out []string
	for _, c := range calls {
		verb, rest, _ := strings.Cut(c, " ")
		table, _, _ := strings.Cut(rest, " ")
		if verb != "exists" && verb != "list" && !slices.Contains(out, table) {
			out = append(out, table)
		}
	}
	return out
}

func TestApplyMovesJumpFirst(t *testing.T) {
	rs := Plan(defaultConfig())
	guard, redirect := parts(t, rs)
	old := Plan(Config{ProxyPort: 9000, ProxyUID: 1502, MetadataIP: DefaultMetadataIP, MetadataPort: 8080})
	oldGuard, oldRedirect := parts(t, old)
	tests := []struct {
		name   string
		table  string
		output []string
		want   []string
	}{
		{"nat: jump behind a mesh", NATTable, []string{meshRule, redirect.Jump.String()}, []string{redirect.Jump.String(), meshRule}},
		{"nat: duplicate jumps", NATTable, []string{redirect.Jump.String(), meshRule, redirect.Jump.String()}, []string{redirect.Jump.String(), meshRule}},
		{"nat: stale jump from an older config", NATTable, []string{oldRedirect.Jump.String(), meshRule}, []string{redirect.Jump.String(), meshRule}},
		{"nat: stale jump matching by comment only", NATTable, []string{meshRule, `-A OUTPUT -m comment --comment "imds-proxy: gone" -j RETURN`}, []string{redirect.Jump.String(), meshRule}},
		{"nat: foreign jump into a lookalike chain kept", NATTable, []string{"-A OUTPUT -j IMDS_PROXY_OUTPUT2"}, []string{redirect.Jump.String(), "-A OUTPUT -j IMDS_PROXY_OUTPUT2"}},
		{"filter: jump behind a policy", FilterTable, []string{policyRule, guard.Jump.String()}, []string{guard.Jump.String(), policyRule}},
		{"filter: duplicate jumps", FilterTable, []string{guard.Jump.String(), policyRule, guard.Jump.String()}, []string{guard.Jump.String(), policyRule}},
		{"filter: stale jump from an older config", FilterTable, []string{oldGuard.Jump.String(), policyRule}, []string{guard.Jump.String(), policyRule}},
		{"filter: stale rule matching by comment only", FilterTable, []string{policyRule, `-A OUTPUT -m comment --comment "imds-proxy: gone" -j REJECT`}, []string{guard.Jump.String(), policyRule}},
		{"filter: a jump into the nat chain's name is not ours here", FilterTable, []string{"-A OUTPUT -j IMDS_PROXY_OUTPUT"}, []string{guard.Jump.String(), "-A OUTPUT -j IMDS_PROXY_OUTPUT"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFake()
			if tt.table == FilterTable {
				// A chain of that name exists in filter, as the rule needs.
				f.setChain(FilterTable, OutputChain)
			}
			f.setChain(tt.table, "OUTPUT", slices.Clone(tt.output)...)
			if err := Apply(testr.New(t), f, rs); err != nil {
				t.Fatalf("Apply() = %v", err)
			}
			if got := f.chain(tt.table, "OUTPUT"); !slices.Equal(got, tt.want) {
				t.Errorf("OUTPUT = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestApplyFailsClosedAtEveryStep(t *testing.T) {
	rs := Plan(defaultConfig())
	guard, redirect := parts(t, rs)
	stale := func() *fakeApplier {
		f := newFake()
		f.setChain(FilterTable, "OUTPUT", policyRule, guard.Jump.String())
		f.setChain(NATTable, "OUTPUT", meshRule, redirect.Jump.String())
		return f
	}
	// Count the calls of a successful run on a namespace with stale jumps in
	// both tables, which exercises every kind of step, then fail each one in
	// turn.
	probe := stale()
	if err := Apply(testr.New(t), probe, rs); err != nil {
		t.Fatal(err)
	}
	total := len(probe.calls)
	if total != 27 {
		t.Fatalf("successful run made %d calls, want 27: %q", total, probe.calls)
	}
	for i := 1; i <= total; i++ {
		f := stale()
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

// TestApplyFailureInNATLeavesTheGuard: the guard is written first, so a run
// that fails while writing the redirect leaves a pod that refuses metadata
// connections.
func TestApplyFailureInNATLeavesTheGuard(t *testing.T) {
	rs := Plan(defaultConfig())
	guard, _ := parts(t, rs)
	f := newFake()
	f.failAt = 11 // clear nat IMDS_PROXY_OUTPUT
	if err := Apply(testr.New(t), f, rs); !errors.Is(err, errInjected) || !strings.Contains(err.Error(), "clear nat IMDS_PROXY_OUTPUT") {
		t.Fatalf("Apply() = %v, want the injected error at the nat table's first write", err)
	}
	if got := f.chain(FilterTable, "OUTPUT"); !slices.Equal(got, []string{guard.Jump.String()}) {
		t.Errorf("filter OUTPUT = %q, want the guard's jump", got)
	}
	if got := f.chain(FilterTable, GuardChain); !slices.Equal(got, guard.ChainRules(GuardChain)) {
		t.Errorf("%s = %q, want the guard", GuardChain, got)
	}
}

func TestCheck(t *testing.T) {
	rs := Plan(defaultConfig())
	guard, redirect := parts(t, rs)
	applied := func(tamper func(f *fakeApplier)) *fakeApplier {
		f := newFake()
		if err := Apply(testr.New(t), f, rs); err != nil {
			t.Fatal(err)
		}
		if tamper != nil {
			tamper(f)
		}
		return f
	}
	natOutput := func(rules ...string) func(*fakeApplier) {
		return func(f *fakeApplier) { f.setChain(NATTable, "OUTPUT", rules...) }
	}
	filterOutput := func(rules ...string) func(*fakeApplier) {
		return func(f *fakeApplier) { f.setChain(FilterTable, "OUTPUT", rules...) }
	}
	tests := []struct {
		name string
		f    *fakeApplier
		want []string
	}{
		{"applied", applied(nil), nil},
		{"applied behind rules of others", applied(func(f *fakeApplier) {
			f.setChain(NATTable, "OUTPUT", redirect.Jump.String(), meshRule)
			f.setChain(FilterTable, "OUTPUT", guard.Jump.String(), policyRule)
		}), nil},
		{"nothing applied", newFake(), []string{
			"chain IMDS_PROXY_GUARD does not exist",
			"chain OUTPUT of the filter table has no jump to IMDS_PROXY_GUARD",
			"chain IMDS_PROXY_OUTPUT does not exist",
			"chain IMDS_PROXY_REDIRECT does not exist",
			"chain OUTPUT of the nat table has no jump to IMDS_PROXY_OUTPUT",
		}},
		{"nat jump not first", applied(natOutput(meshRule, redirect.Jump.String())), []string{
			"our jump is not first in chain OUTPUT of the nat table: it is at position 2, behind [" + meshRule + "]",
		}},
		{"nat: two jumps", applied(natOutput(redirect.Jump.String(), redirect.Jump.String())), []string{
			"chain OUTPUT of the nat table has 2 jumps into our chains (at positions 1, 2), want exactly one",
		}},
		{"nat: different jump", applied(natOutput("-A OUTPUT -j IMDS_PROXY_OUTPUT")), []string{
			"the jump in chain OUTPUT of the nat table is [-A OUTPUT -j IMDS_PROXY_OUTPUT], want [" + redirect.Jump.String() + "]",
		}},
		{"guard's jump missing", applied(filterOutput(policyRule)), []string{
			"chain OUTPUT of the filter table has no jump to IMDS_PROXY_GUARD",
		}},
		{"guard's jump not first", applied(filterOutput(policyRule, guard.Jump.String())), []string{
			"our jump is not first in chain OUTPUT of the filter table: it is at position 2, behind [" + policyRule + "]",
		}},
		{"guard's jump different", applied(filterOutput("-A OUTPUT -j IMDS_PROXY_GUARD")), []string{
			"the jump in chain OUTPUT of the filter table is [-A OUTPUT -j IMDS_PROXY_GUARD], want [" + guard.Jump.String() + "]",
		}},
		{"guard's chain gone", applied(func(f *fakeApplier) {
			delete(f.tables[FilterTable].chains, GuardChain)
		}), []string{
			"chain IMDS_PROXY_GUARD does not exist",
		}},
		{"guard refuses without a reset", applied(func(f *fakeApplier) {
			f.setChain(FilterTable, GuardChain, guard.Rules[0].String(), strings.TrimSuffix(guard.Rules[1].String(), " --reject-with tcp-reset"))
		}), []string{
			"rule 2 of chain IMDS_PROXY_GUARD is [" + strings.TrimSuffix(guard.Rules[1].String(), " --reject-with tcp-reset") + "], want [" + guard.Rules[1].String() + "]",
		}},
		{"extra rule", applied(func(f *fakeApplier) {
			f.setChain(NATTable, RedirectChain, append(f.chain(NATTable, RedirectChain), "-A IMDS_PROXY_REDIRECT -j RETURN")...)
		}), []string{
			"chain IMDS_PROXY_REDIRECT has an extra rule 2 [-A IMDS_PROXY_REDIRECT -j RETURN]",
		}},
		{"rule missing", applied(func(f *fakeApplier) {
			f.setChain(NATTable, OutputChain, f.chain(NATTable, OutputChain)[1:]...)
		}), []string{
			"rule 1 of chain IMDS_PROXY_OUTPUT is [" + redirect.Rules[1].String() + "], want [" + redirect.Rules[0].String() + "]",
			"chain IMDS_PROXY_OUTPUT lacks rule 2 [" + redirect.Rules[1].String() + "]",
		}},
	}
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
	for i := 1; i <= len(readOnlyCheck); i++ {
		f := newFake()
		if err := Apply(testr.New(t), f, Plan(defaultConfig())); err != nil {
			t.Fatal(err)
		}
		f.calls, f.failAt = nil, i
		err := Check(f, Plan(defaultConfig()))
		var drift *DriftError
		if !errors.Is(err, errInjected) || errors.As(err, &drift) {
			t.Errorf("failing call %d (%s): Check() = %v, want the injected error and no drift", i, readOnlyCheck[i-1], err)
		}
	}
}

func TestCleanup(t *testing.T) {
	rs := Plan(defaultConfig())
	guard, redirect := parts(t, rs)
	f := newFake()
	f.setChain(NATTable, "OUTPUT", meshRule)
	f.setChain(NATTable, "MESH", "-A MESH -j RETURN")
	f.setChain(FilterTable, "OUTPUT", policyRule)
	before := f.dump()
	if err := Apply(testr.New(t), f, rs); err != nil {
		t.Fatal(err)
	}
	// Duplicates, too.
	f.setChain(NATTable, "OUTPUT", append(f.chain(NATTable, "OUTPUT"), redirect.Jump.String())...)
	f.setChain(FilterTable, "OUTPUT", append(f.chain(FilterTable, "OUTPUT"), guard.Jump.String())...)
	f.calls = nil
	if err := Cleanup(testr.New(t), f, rs); err != nil {
		t.Fatalf("Cleanup() = %v", err)
	}
	if got := f.dump(); got != before {
		t.Errorf("after cleanup:\n%s\nwant the state before apply:\n%s", got, before)
	}
	// The redirect goes first, the guard last.
	if first, last := f.calls[0], f.calls[len(f.calls)-1]; first != "list nat OUTPUT" || last != "delete-chain filter IMDS_PROXY_GUARD" {
		t.Errorf("cleanup began with %q and ended with %q, want the nat table first and the guard's chain last", first, last)
	}
	f.calls = nil
	if err := Cleanup(testr.New(t), f, rs); err != nil {
		t.Fatalf("second Cleanup() = %v", err)
	}
	want := []string{
		"list nat OUTPUT", "exists nat IMDS_PROXY_OUTPUT", "exists nat IMDS_PROXY_REDIRECT",
		"list filter OUTPUT", "exists filter IMDS_PROXY_GUARD",
	}
	if !slices.Equal(f.calls, want) {
		t.Errorf("second cleanup calls %q, want %q", f.calls, want)
	}
	if got := f.dump(); got != before {
		t.Errorf("second cleanup changed the state:\n%s", got)
	}
}

func TestCleanupFailsClosed(t *testing.T) {
	rs := Plan(defaultConfig())
	probe := newFake()
	if err := Apply(testr.New(t), probe, rs); err != nil {
		t.Fatal(err)
	}
	probe.calls = nil
	if err := Cleanup(testr.New(t), probe, rs); err != nil {
		t.Fatal(err)
	}
	total := len(probe.calls)
	if total != 13 {
		t.Fatalf("successful cleanup made %d calls, want 13: %q", total, probe.calls)
	}
	for i := 1; i <= total; i++ {
		f := newFake()
		if err := Apply(testr.New(t), f, rs); err != nil {
			t.Fatal(err)
		}
		f.calls, f.failAt = nil, i
		if err := Cleanup(testr.New(t), f, rs); !errors.Is(err, errInjected) {
			t.Errorf("failing call %d (%s): Cleanup() = %v, want the injected error", i, probe.calls[i-1], err)
		}
		if len(f.calls) != i {
			t.Errorf("failing call %d: Cleanup went on with %q", i, f.calls[i:])
		}
	}
}

// previousRelease is the ruleset of the release before the guard: the nat
// table alone.
func previousRelease(t *testing.T, rs Ruleset) Ruleset {
	t.Helper()
	_, redirect := parts(t, rs)
	return Ruleset{Tables: []TableRules{redirect}}
}

// returnRelease is the ruleset of the releases before that, which also let
// the proxy's UID leave our nat chain with RETURN instead of ACCEPT.
func returnRelease(t *testing.T, rs Ruleset) Ruleset {
	t.Helper()
	prev := previousRelease(t, rs)
	prev.Tables[0].Rules = slices.Clone(prev.Tables[0].Rules)
	prev.Tables[0].Rules[0].Target = []string{"-j", "RETURN"}
	return prev
}

func TestOlderReleasesAreDriftAndReplaced(t *testing.T) {
	rs := Plan(defaultConfig())
	guard, _ := parts(t, rs)
	const uidRule = `-A IMDS_PROXY_OUTPUT -m owner --uid-owner 1501 -m comment --comment "imds-proxy: proxy UID 1501 reaches the real metadata service"`
	noGuard := []string{
		"chain IMDS_PROXY_GUARD does not exist",
		"chain OUTPUT of the filter table has no jump to IMDS_PROXY_GUARD",
	}
	tests := []struct {
		name    string
		release func(*testing.T, Ruleset) Ruleset
		want    []string
		// writes are the tables a rerun must write to.
		writes []string
	}{
		{"the release before the guard", previousRelease, noGuard, []string{FilterTable}},
		{"the releases with RETURN", returnRelease,
			append(slices.Clone(noGuard), "rule 1 of chain IMDS_PROXY_OUTPUT is ["+uidRule+" -j RETURN], want ["+uidRule+" -j ACCEPT]"),
			[]string{FilterTable, NATTable}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fresh := newFake()
			fresh.setChain(NATTable, "OUTPUT", meshRule)
			fresh.setChain(FilterTable, "OUTPUT", policyRule)
			before := fresh.dump()
			if err := Apply(testr.New(t), fresh, rs); err != nil {
				t.Fatal(err)
			}

			f := newFake()
			f.setChain(NATTable, "OUTPUT", meshRule)
			f.setChain(FilterTable, "OUTPUT", policyRule)
			if err := Apply(testr.New(t), f, tt.release(t, rs)); err != nil {
				t.Fatal(err)
			}
			err := Check(f, rs)
			var drift *DriftError
			if !errors.As(err, &drift) {
				t.Fatalf("Check() = %v, want a *DriftError", err)
			}
			if !slices.Equal(drift.Problems, tt.want) {
				t.Errorf("problems:\n%q\nwant:\n%q", drift.Problems, tt.want)
			}

			// A rerun of this release repairs it, writing only what differs.
			f.calls = nil
			if err := Apply(testr.New(t), f, rs); err != nil {
				t.Fatal(err)
			}
			if got, want := f.dump(), fresh.dump(); got != want {
				t.Errorf("after the rerun:\n%s\nwant:\n%s", got, want)
			}
			wrote := writtenTables(f.calls)
			if !slices.Equal(wrote, tt.writes) {
				t.Errorf("the rerun wrote to tables %q, want %q", wrote, tt.writes)
			}
			if got := f.chain(FilterTable, "OUTPUT"); !slices.Equal(got, []string{guard.Jump.String(), policyRule}) {
				t.Errorf("filter OUTPUT after the rerun = %q", got)
			}
			if err := Check(f, rs); err != nil {
				t.Errorf("Check() after the rerun = %v", err)
			}

			// --cleanup of this release removes the old ruleset too.
			g := newFake()
			g.setChain(NATTable, "OUTPUT", meshRule)
			g.setChain(FilterTable, "OUTPUT", policyRule)
			if err := Apply(testr.New(t), g, tt.release(t, rs)); err != nil {
				t.Fatal(err)
			}
			if err := Cleanup(testr.New(t), g, rs); err != nil {
				t.Fatal(err)
			}
			if got := g.dump(); got != before {
				t.Errorf("after cleanup:\n%s\nwant:\n%s", got, before)
			}
		})
	}
}
