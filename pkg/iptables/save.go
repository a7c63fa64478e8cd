package iptables

import (
	"fmt"
	"slices"
	"strings"
)

// Backend names one of the two iptables implementations, which keep separate
// rulesets in the kernel: each sees only the rules it wrote.
type Backend string

// The backends Detect chooses between.
const (
	// BackendNFT is iptables-nft, the nf_tables based implementation.
	BackendNFT Backend = "nft"
	// BackendLegacy is iptables-legacy, the x_tables based implementation.
	BackendLegacy Backend = "legacy"
)

// SaveSummary counts what one iptables-save dump holds.
type SaveSummary struct {
	// Rules is the number of rules (-A lines) over all tables.
	Rules int
	// UserChains is the number of chains that are not built in.
	UserChains int
}

// Summarize counts the rules and user-defined chains in the output of
// iptables-save (all tables). Lines it does not recognise are ignored, so an
// empty or garbled dump counts as empty.
func Summarize(save string) SaveSummary {
	var s SaveSummary
	for _, line := range strings.Split(save, "\n") {
		line = strings.TrimSpace(line)
		switch {
		case strings.HasPrefix(line, "-A "):
			s.Rules++
		case strings.HasPrefix(line, ":"):
			// ":NAME POLICY [p:b]"; user chains have the policy "-".
			if f := strings.Fields(line); len(f) >= 2 && len(f[0]) > 1 && f[1] == "-" {
				s.UserChains++
			}
		}
	}
	return s
}

// Detect picks the backend for a network namespace from the iptables-save
// output of both backends: the one that already holds rules or user chains,
// preferring the one holding more, and nft when neither holds any. Tables that
// exist but are empty do not count, because merely listing a table with the
// legacy backend creates it; counting them would make the choice flip after
// the first run. The returned reason explains the choice in one sentence.
func Detect(nftSave, legacySave string) (Backend, string) {
	n, l := Summarize(nftSave), Summarize(legacySave)
	describe := fmt.Sprintf("nft holds %d rules in %d chains of its own, legacy %d rules in %d",
		n.Rules, n.UserChains, l.Rules, l.UserChains)
	if l.Rules+l.UserChains > n.Rules+n.UserChains {
		return BackendLegacy, describe + "; using legacy"
	}
	if n.Rules+n.UserChains == 0 {
		return BackendNFT, describe + "; neither holds rules, using nft"
	}
	return BackendNFT, describe + "; using nft"
}

// OwnRules filters the output of iptables-save to the lines that belong to
// rs: for each of our tables in the dump, its header, our chains, their
// rules, the jumps into them, and COMMIT. Counters are kept as printed, and
// the tables come in rs's order, whatever the dump's. The result is empty
// when the dump holds none of our tables.
func OwnRules(save string, rs Ruleset) string {
	tables := make([]strings.Builder, len(rs.Tables))
	walkOwnTables(save, rs, func(i int, line string) {
		table := rs.Tables[i]
		keep := false
		switch {
		case strings.HasPrefix(line, "*"), line == "COMMIT":
			keep = true
		case strings.HasPrefix(line, ":"):
			f := strings.Fields(line[1:])
			keep = len(f) > 0 && table.Owns(f[0])
		case strings.HasPrefix(line, "-A "):
			args, err := splitRule(line)
			keep = err == nil && len(args) >= 2 &&
				(table.Owns(args[1]) || (args[1] == BuiltinChain && isOurs(args, table)))
		}
		if keep {
			tables[i].WriteString(line + "\n")
		}
	})
	var b strings.Builder
	for i := range tables {
		b.WriteString(tables[i].String())
	}
	return b.String()
}

// walkOwnTables calls fn with each line of an iptables-save dump that lies
// in one of rs's tables, from its "*table" header to its COMMIT, and the
// index of that table in rs.Tables. Carriage returns are dropped.
func walkOwnTables(save string, rs Ruleset, fn func(table int, line string)) {
	in := -1 // the table we are in, or -1
	for _, line := range strings.Split(save, "\n") {
		line = strings.TrimRight(line, "\r")
		if strings.HasPrefix(line, "*") {
			in = slices.IndexFunc(rs.Tables, func(t TableRules) bool { return t.Table == line[1:] })
		}
		if in < 0 {
			continue
		}
		fn(in, line)
		if line == "COMMIT" {
			in = -1
		}
	}
}

// FoundIn reports whether an iptables-save dump holds any chain of rs or any
// jump into one, in any of our tables, so a caller can notice our rules in
// the backend it is not using.
func (rs Ruleset) FoundIn(save string) bool {
	for _, line := range strings.Split(OwnRules(save, rs), "\n") {
		if strings.HasPrefix(line, ":") || strings.HasPrefix(line, "-A ") {
			return true
		}
	}
	return false
}

// ForeignJumps returns the rules of our tables in an iptables-save dump that
// jump or go to one of our chains of that table from a chain that is
// neither ours nor BuiltinChain (whose jumps into our chains Apply and
// Cleanup treat as ours and replace). Such a rule keeps our chain from being
// deleted, and one in a chain reached from another hook makes the kernel
// refuse what our chain needs there (REDIRECT from nat POSTROUTING, the
// owner match from filter INPUT); the caller names them when a step fails.
func (rs Ruleset) ForeignJumps(save string) []string {
	var out []string
	walkOwnTables(save, rs, func(i int, line string) {
		if !strings.HasPrefix(line, "-A ") {
			return
		}
		table := rs.Tables[i]
		args, err := splitRule(line)
		if err != nil || len(args) < 2 || args[1] == BuiltinChain || table.Owns(args[1]) {
			return
		}
		if jumpsInto(args, table) {
			out = append(out, line)
		}
	})
	return out
}
