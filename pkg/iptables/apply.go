package iptables

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/go-logr/logr"
)

// Applier is the small set of iptables operations Apply, Check and Cleanup
// need. Every method acts on one table of one backend in the caller's network
// namespace and returns an error that names the command and its output.
type Applier interface {
	// ChainExists reports whether chain exists in table.
	ChainExists(table, chain string) (bool, error)
	// ClearChain creates chain in table, or flushes it when it exists.
	ClearChain(table, chain string) error
	// DeleteChain deletes the empty, unreferenced chain.
	DeleteChain(table, chain string) error
	// Append adds a rule with the given arguments at the end of chain.
	Append(table, chain string, spec ...string) error
	// Insert adds a rule with the given arguments at 1-based position pos.
	Insert(table, chain string, pos int, spec ...string) error
	// DeleteRule deletes the rule at 1-based position pos of chain.
	DeleteRule(table, chain string, pos int) error
	// List returns chain as iptables -S prints it: a -P or -N line, then one
	// -A line per rule.
	List(table, chain string) ([]string, error)
}

// DriftError reports how the rules in the kernel differ from a Ruleset.
type DriftError struct {
	// Problems lists each difference in one sentence.
	Problems []string
}

// Error joins the problems into one line.
func (e *DriftError) Error() string {
	return "rules are not in place: " + strings.Join(e.Problems, "; ")
}

// Apply makes the kernel hold exactly rs. When Check finds everything in place
// it changes nothing. Otherwise, table by table in rs's order and only for
// the tables that differ from the plan, it creates or flushes our chains,
// refills them, and makes sure the jump from BuiltinChain exists once and
// first; then it verifies the result with Check. It stops at the first
// failed step and returns that step's error.
func Apply(log logr.Logger, a Applier, rs Ruleset) error {
	var drifted []TableRules
	for _, t := range rs.Tables {
		problems, err := checkTable(a, t)
		if err != nil {
			return err
		}
		if len(problems) > 0 {
			log.V(1).Info("rules differ from the plan; rebuilding", "table", t.Table, "problems", problems)
			drifted = append(drifted, t)
		}
	}
	if len(drifted) == 0 {
		log.Info("rules already in place; nothing to change")
		return nil
	}
	for _, t := range drifted {
		if err := rebuild(log, a, t); err != nil {
			return err
		}
	}
	if err := Check(a, rs); err != nil {
		return fmt.Errorf("verifying the applied rules: %w", err)
	}
	return nil
}

// rebuild creates or flushes t's chains, refills them and puts the jump in
// place.
func rebuild(log logr.Logger, a Applier, t TableRules) error {
	for _, chain := range t.Chains {
		log.V(1).Info("creating or flushing chain", "table", t.Table, "chain", chain)
		if err := a.ClearChain(t.Table, chain); err != nil {
			return fmt.Errorf("creating or flushing chain %s: %w", chain, err)
		}
	}
	for _, r := range t.Rules {
		log.V(1).Info("appending rule", "table", t.Table, "rule", r.String())
		if err := a.Append(t.Table, r.Chain, r.Spec()...); err != nil {
			return fmt.Errorf("appending %q: %w", r.String(), err)
		}
	}
	return ensureJump(log, a, t)
}

// ensureJump leaves exactly one jump, t.Jump, at position 1 of BuiltinChain.
// A jump that is already exact and first is kept; any other jump into our
// chains is removed before t.Jump is inserted.
func ensureJump(log logr.Logger, a Applier, t TableRules) error {
	jumps, err := listJumps(a, t)
	if err != nil {
		return err
	}
	want := t.Jump.String()
	if len(jumps) == 1 && jumps[0].pos == 1 && jumps[0].rule == want {
		log.V(1).Info("jump already in place", "table", t.Table, "chain", BuiltinChain, "rule", want)
		return nil
	}
	if err := deleteJumps(log, a, t, jumps); err != nil {
		return err
	}
	log.V(1).Info("inserting jump at position 1", "table", t.Table, "chain", BuiltinChain, "rule", want)
	if err := a.Insert(t.Table, BuiltinChain, 1, t.Jump.Spec()...); err != nil {
		return fmt.Errorf("inserting %q at position 1 of %s: %w", want, t.builtin(), err)
	}
	return nil
}

// Check compares the kernel's rules with rs and returns a *DriftError listing
// every difference, table by table in rs's order, or another error when the
// rules cannot be read.
func Check(a Applier, rs Ruleset) error {
	var problems []string
	for _, t := range rs.Tables {
		p, err := checkTable(a, t)
		if err != nil {
			return err
		}
		problems = append(problems, p...)
	}
	if len(problems) > 0 {
		return &DriftError{Problems: problems}
	}
	return nil
}

// checkTable describes, one sentence each, how the kernel's rules in t's
// table differ from t.
func checkTable(a Applier, t TableRules) ([]string, error) {
	var problems []string
	for _, chain := range t.Chains {
		ok, err := a.ChainExists(t.Table, chain)
		if err != nil {
			return nil, fmt.Errorf("looking up chain %s: %w", chain, err)
		}
		if !ok {
			problems = append(problems, fmt.Sprintf("chain %s does not exist", chain))
			continue
		}
		lines, err := a.List(t.Table, chain)
		if err != nil {
			return nil, fmt.Errorf("listing chain %s: %w", chain, err)
		}
		problems = append(problems, diffRules(chain, ruleLines(lines), t.ChainRules(chain))...)
	}
	jumps, err := listJumps(a, t)
	if err != nil {
		return nil, err
	}
	want := t.Jump.String()
	switch {
	case len(jumps) == 0:
		problems = append(problems, fmt.Sprintf("%s has no jump to %s", t.builtin(), t.Jump.Target[len(t.Jump.Target)-1]))
	case len(jumps) > 1:
		problems = append(problems, fmt.Sprintf("%s has %d jumps into our chains (at positions %s), want exactly one",
			t.builtin(), len(jumps), positions(jumps)))
	case jumps[0].rule != want:
		problems = append(problems, fmt.Sprintf("the jump in %s is [%s], want [%s]", t.builtin(), jumps[0].rule, want))
	}
	if len(jumps) > 0 && jumps[0].pos != 1 {
		problems = append(problems, fmt.Sprintf("our jump is not first in %s: it is at position %d, behind [%s]",
			t.builtin(), jumps[0].pos, jumps[0].first))
	}
	return problems, nil
}

// Cleanup removes, table by table in the reverse of rs's order (the
// redirect before the guard, so an interrupted cleanup leaves a pod that
// refuses metadata connections), every jump from BuiltinChain into our
// chains, then flushes and deletes our chains. Rules and chains of others
// are left alone; running it when nothing of ours exists succeeds without
// changes.
func Cleanup(log logr.Logger, a Applier, rs Ruleset) error {
	for i := len(rs.Tables) - 1; i >= 0; i-- {
		if err := cleanupTable(log, a, rs.Tables[i]); err != nil {
			return err
		}
	}
	return nil
}

// cleanupTable removes our jumps and chains from t's table.
func cleanupTable(log logr.Logger, a Applier, t TableRules) error {
	jumps, err := listJumps(a, t)
	if err != nil {
		return err
	}
	if err := deleteJumps(log, a, t, jumps); err != nil {
		return err
	}
	var present []string
	for _, chain := range t.Chains {
		ok, err := a.ChainExists(t.Table, chain)
		if err != nil {
			return fmt.Errorf("looking up chain %s: %w", chain, err)
		}
		if ok {
			present = append(present, chain)
		}
	}
	// Flush all before deleting any: our chains may reference each other.
	for _, chain := range present {
		log.V(1).Info("flushing chain", "table", t.Table, "chain", chain)
		if err := a.ClearChain(t.Table, chain); err != nil {
			return fmt.Errorf("flushing chain %s: %w", chain, err)
		}
	}
	for _, chain := range present {
		log.V(1).Info("deleting chain", "table", t.Table, "chain", chain)
		if err := a.DeleteChain(t.Table, chain); err != nil {
			return fmt.Errorf("deleting chain %s: %w", chain, err)
		}
	}
	return nil
}

// jump is a rule of BuiltinChain that sends packets into one of our chains.
type jump struct {
	pos   int    // 1-based position in BuiltinChain
	rule  string // the rule as listed
	first string // the rule at position 1 of BuiltinChain
}

// listJumps returns the jumps from BuiltinChain of t's table into t's
// chains, in order.
func listJumps(a Applier, t TableRules) ([]jump, error) {
	lines, err := a.List(t.Table, BuiltinChain)
	if err != nil {
		return nil, fmt.Errorf("listing %s: %w", t.builtin(), err)
	}
	return findJumps(ruleLines(lines), t)
}

// findJumps picks the rules among rules (the -A lines of BuiltinChain) whose
// target is one of t's chains or whose comment carries CommentPrefix.
func findJumps(rules []string, t TableRules) ([]jump, error) {
	var out []jump
	for i, line := range rules {
		args, err := splitRule(line)
		if err != nil {
			return nil, fmt.Errorf("parsing rule %d of %s %q: %w", i+1, t.builtin(), line, err)
		}
		if isOurs(args, t) {
			out = append(out, jump{pos: i + 1, rule: line, first: rules[0]})
		}
	}
	return out, nil
}

// isOurs reports whether a rule, split into arguments, jumps or goes to one of
// t's chains or carries our comment.
func isOurs(args []string, t TableRules) bool {
	if jumpsInto(args, t) {
		return true
	}
	for i := 0; i+1 < len(args); i++ {
		if args[i] == "--comment" && strings.HasPrefix(args[i+1], CommentPrefix) {
			return true
		}
	}
	return false
}

// jumpsInto reports whether a rule, split into arguments, jumps or goes to
// one of t's chains.
func jumpsInto(args []string, t TableRules) bool {
	for i := 0; i+1 < len(args); i++ {
		switch args[i] {
		case "-j", "-g", "--jump", "--goto":
			if t.Owns(args[i+1]) {
				return true
			}
		}
	}
	return false
}

// deleteJumps deletes jumps from BuiltinChain of t's table, from the
// highest position down, so the positions of the others stay valid.
func deleteJumps(log logr.Logger, a Applier, t TableRules, jumps []jump) error {
	for i := len(jumps) - 1; i >= 0; i-- {
		j := jumps[i]
		log.V(1).Info("deleting jump", "table", t.Table, "chain", BuiltinChain, "position", j.pos, "rule", j.rule)
		if err := a.DeleteRule(t.Table, BuiltinChain, j.pos); err != nil {
			return fmt.Errorf("deleting %q at position %d of %s: %w", j.rule, j.pos, t.builtin(), err)
		}
	}
	return nil
}

// diffRules describes, one rule at a time, how the rules got of chain differ
// from want.
func diffRules(chain string, got, want []string) []string {
	var out []string
	for i := 0; i < max(len(got), len(want)); i++ {
		switch {
		case i >= len(got):
			out = append(out, fmt.Sprintf("chain %s lacks rule %d [%s]", chain, i+1, want[i]))
		case i >= len(want):
			out = append(out, fmt.Sprintf("chain %s has an extra rule %d [%s]", chain, i+1, got[i]))
		case got[i] != want[i]:
			out = append(out, fmt.Sprintf("rule %d of chain %s is [%s], want [%s]", i+1, chain, got[i], want[i]))
		}
	}
	return out
}

// ruleLines keeps the -A lines of an iptables -S listing.
func ruleLines(lines []string) []string {
	var out []string
	for _, l := range lines {
		if strings.HasPrefix(l, "-A ") {
			out = append(out, l)
		}
	}
	return out
}

func positions(jumps []jump) string {
	s := make([]string, len(jumps))
	for i, j := range jumps {
		s[i] = strconv.Itoa(j.pos)
	}
	return strings.Join(s, ", ")
}
