package iptables

import (
	"errors"
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
// it changes nothing. Otherwise it creates or flushes our chains, refills
// them, makes sure the jump from BuiltinChain exists once and first, and
// verifies the result with Check. It stops at the first failed step and
// returns that step's error.
func Apply(log logr.Logger, a Applier, rs Ruleset) error {
	err := Check(a, rs)
	var drift *DriftError
	switch {
	case err == nil:
		log.Info("rules already in place; nothing to change")
		return nil
	case errors.As(err, &drift):
		log.V(1).Info("rules differ from the plan; rebuilding", "problems", drift.Problems)
	default:
		return err
	}
	for _, chain := range rs.Chains {
		log.V(1).Info("creating or flushing chain", "table", Table, "chain", chain)
		if err := a.ClearChain(Table, chain); err != nil {
			return fmt.Errorf("creating or flushing chain %s: %w", chain, err)
		}
	}
	for _, r := range rs.Rules {
		log.V(1).Info("appending rule", "table", Table, "rule", r.String())
		if err := a.Append(Table, r.Chain, r.Spec()...); err != nil {
			return fmt.Errorf("appending %q: %w", r.String(), err)
		}
	}
	if err := ensureJump(log, a, rs); err != nil {
		return err
	}
	if err := Check(a, rs); err != nil {
		return fmt.Errorf("verifying the applied rules: %w", err)
	}
	return nil
}

// ensureJump leaves exactly one jump, rs.Jump, at position 1 of BuiltinChain.
// A jump that is already exact and first is kept; any other jump into our
// chains is removed before rs.Jump is inserted.
func ensureJump(log logr.Logger, a Applier, rs Ruleset) error {
	jumps, err := listJumps(a, rs)
	if err != nil {
		return err
	}
	want := rs.Jump.String()
	if len(jumps) == 1 && jumps[0].pos == 1 && jumps[0].rule == want {
		log.V(1).Info("jump already in place", "table", Table, "chain", BuiltinChain, "rule", want)
		return nil
	}
	if err := deleteJumps(log, a, jumps); err != nil {
		return err
	}
	log.V(1).Info("inserting jump at position 1", "table", Table, "chain", BuiltinChain, "rule", want)
	if err := a.Insert(Table, BuiltinChain, 1, rs.Jump.Spec()...); err != nil {
		return fmt.Errorf("inserting %q at position 1: %w", want, err)
	}
	return nil
}

// Check compares the kernel's rules with rs and returns a *DriftError listing
// every difference, or another error when the rules cannot be read.
func Check(a Applier, rs Ruleset) error {
	var problems []string
	for _, chain := range rs.Chains {
		ok, err := a.ChainExists(Table, chain)
		if err != nil {
			return fmt.Errorf("looking up chain %s: %w", chain, err)
		}
		if !ok {
			problems = append(problems, fmt.Sprintf("chain %s does not exist", chain))
			continue
		}
		lines, err := a.List(Table, chain)
		if err != nil {
			return fmt.Errorf("listing chain %s: %w", chain, err)
		}
		problems = append(problems, diffRules(chain, ruleLines(lines), rs.ChainRules(chain))...)
	}
	jumps, err := listJumps(a, rs)
	if err != nil {
		return err
	}
	want := rs.Jump.String()
	switch {
	case len(jumps) == 0:
		problems = append(problems, fmt.Sprintf("chain %s has no jump to %s", BuiltinChain, rs.Jump.Target[len(rs.Jump.Target)-1]))
	case len(jumps) > 1:
		problems = append(problems, fmt.Sprintf("chain %s has %d jumps into our chains (at positions %s), want exactly one",
			BuiltinChain, len(jumps), positions(jumps)))
	case jumps[0].rule != want:
		problems = append(problems, fmt.Sprintf("the jump in chain %s is [%s], want [%s]", BuiltinChain, jumps[0].rule, want))
	}
	if len(jumps) > 0 && jumps[0].pos != 1 {
		problems = append(problems, fmt.Sprintf("our jump is not first in chain %s: it is at position %d, behind [%s]",
			BuiltinChain, jumps[0].pos, jumps[0].first))
	}
	if len(problems) > 0 {
		return &DriftError{Problems: problems}
	}
	return nil
}

// Cleanup removes every jump from BuiltinChain into our chains, then flushes
// and deletes our chains. Rules and chains of others are left alone; running it
// when nothing of ours exists succeeds without changes.
func Cleanup(log logr.Logger, a Applier, rs Ruleset) error {
	jumps, err := listJumps(a, rs)
	if err != nil {
		return err
	}
	if err := deleteJumps(log, a, jumps); err != nil {
		return err
	}
	var present []string
	for _, chain := range rs.Chains {
		ok, err := a.ChainExists(Table, chain)
		if err != nil {
			return fmt.Errorf("looking up chain %s: %w", chain, err)
		}
		if ok {
			present = append(present, chain)
		}
	}
	// Flush all before deleting any: our chains may reference each other.
	for _, chain := range present {
		log.V(1).Info("flushing chain", "table", Table, "chain", chain)
		if err := a.ClearChain(Table, chain); err != nil {
			return fmt.Errorf("flushing chain %s: %w", chain, err)
		}
	}
	for _, chain := range present {
		log.V(1).Info("deleting chain", "table", Table, "chain", chain)
		if err := a.DeleteChain(Table, chain); err != nil {
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

// listJumps returns the jumps from BuiltinChain into rs's chains, in order.
func listJumps(a Applier, rs Ruleset) ([]jump, error) {
	lines, err := a.List(Table, BuiltinChain)
	if err != nil {
		return nil, fmt.Errorf("listing chain %s: %w", BuiltinChain, err)
	}
	return findJumps(ruleLines(lines), rs)
}

// findJumps picks the rules among rules (the -A lines of BuiltinChain) whose
// target is one of rs's chains or whose comment carries CommentPrefix.
func findJumps(rules []string, rs Ruleset) ([]jump, error) {
	var out []jump
	for i, line := range rules {
		args, err := splitRule(line)
		if err != nil {
			return nil, fmt.Errorf("parsing rule %d of chain %s %q: %w", i+1, BuiltinChain, line, err)
		}
		if isOurs(args, rs) {
			out = append(out, jump{pos: i + 1, rule: line, first: rules[0]})
		}
	}
	return out, nil
}

// isOurs reports whether a rule, split into arguments, jumps or goes to one of
// rs's chains or carries our comment.
func isOurs(args []string, rs Ruleset) bool {
	if jumpsInto(args, rs) {
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
// one of rs's chains.
func jumpsInto(args []string, rs Ruleset) bool {
	for i := 0; i+1 < len(args); i++ {
		switch args[i] {
		case "-j", "-g", "--jump", "--goto":
			if rs.Owns(args[i+1]) {
				return true
			}
		}
	}
	return false
}

// deleteJumps deletes jumps from the highest position down, so the positions
// of the others stay valid.
func deleteJumps(log logr.Logger, a Applier, jumps []jump) error {
	for i := len(jumps) - 1; i >= 0; i-- {
		j := jumps[i]
		log.V(1).Info("deleting jump", "table", Table, "chain", BuiltinChain, "position", j.pos, "rule", j.rule)
		if err := a.DeleteRule(Table, BuiltinChain, j.pos); err != nil {
			return fmt.Errorf("deleting %q at position %d: %w", j.rule, j.pos, err)
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
