package docs

import (
	"errors"
	"fmt"
	"strings"
)

// rulesHeader is the header row of the dependency table in architecture.md.
// parseRules finds the table by it.
var rulesHeader = []string{"Package", "Owns", "May import from this module", "Must not import", "Reads env"}

// plannedMark starts the "Owns" cell of a row whose package does not exist
// yet.
const plannedMark = "(planned)"

// rule is one row of the dependency table.
type rule struct {
	// pkg is the package pattern, relative to the module root: "pkg/imds",
	// or "cmd/proxy/..." for cmd/proxy and every package below it.
	pkg string
	// planned is set when the row's package may not exist yet.
	planned bool
	// allow lists the patterns of the module's packages the package may
	// import (relative to the module root); the list is complete.
	allow []string
	// deny lists import path patterns of other modules or the standard
	// library that the package must not import.
	deny []string
	// readsEnv is false when the package must not read environment
	// variables or use the flag package.
	readsEnv bool
}

// parseRules extracts the dependency table from a Markdown document. The
// table is the first one whose header cells are rulesHeader; it ends at the
// first line that is not a table row. Cells other than "Owns" hold only
// backquoted patterns separated by commas, or "—" for none.
func parseRules(doc string) ([]rule, error) {
	lines := strings.Split(doc, "\n")
	start := -1
	for i, l := range lines {
		if cells, ok := splitRow(l); ok && equalCells(cells, rulesHeader) {
			start = i
			break
		}
	}
	if start < 0 {
		return nil, fmt.Errorf("no table with the header | %s |", strings.Join(rulesHeader, " | "))
	}
	if start+1 >= len(lines) || !isDelimiterRow(lines[start+1], len(rulesHeader)) {
		return nil, fmt.Errorf("line %d: the header is not followed by a |---| delimiter row", start+2)
	}
	var (
		rules []rule
		errs  []error
		seen  = map[string]int{}
	)
	for i := start + 2; i < len(lines); i++ {
		cells, ok := splitRow(lines[i])
		if !ok {
			break
		}
		r, err := parseRow(cells)
		if err != nil {
			errs = append(errs, fmt.Errorf("line %d: %w", i+1, err))
			continue
		}
		if prev, dup := seen[r.pkg]; dup {
			errs = append(errs, fmt.Errorf("line %d: package %s already has a row (line %d)", i+1, r.pkg, prev))
			continue
		}
		seen[r.pkg] = i + 1
		rules = append(rules, r)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if len(rules) == 0 {
		return nil, errors.New("the dependency table has no rows")
	}
	return rules, nil
}

// splitRow splits a Markdown table row "| a | b |" into its trimmed cells.
// ok is false for a line that is not a table row.
func splitRow(line string) (cells []string, ok bool) {
	line = strings.TrimSpace(line)
	if len(line) < 2 || line[0] != '|' || line[len(line)-1] != '|' {
		return nil, false
	}
	for _, c := range strings.Split(line[1:len(line)-1], "|") {
		cells = append(cells, strings.TrimSpace(c))
	}
	return cells, true
}

func equalCells(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// isDelimiterRow reports whether line is a |---|---| row with n cells.
func isDelimiterRow(line string, n int) bool {
	cells, ok := splitRow(line)
	if !ok || len(cells) != n {
		return false
	}
	for _, c := range cells {
		if strings.Trim(c, ":-") != "" || !strings.Contains(c, "-") {
			return false
		}
	}
	return true
}

// parseRow turns the cells of one table row into a rule.
func parseRow(cells []string) (rule, error) {
	if len(cells) != len(rulesHeader) {
		return rule{}, fmt.Errorf("%d cells, want %d", len(cells), len(rulesHeader))
	}
	pkgs, err := patterns(cells[0])
	if err != nil {
		return rule{}, fmt.Errorf("column %q: %w", rulesHeader[0], err)
	}
	if len(pkgs) != 1 {
		return rule{}, fmt.Errorf("column %q: want exactly one package pattern, got %d", rulesHeader[0], len(pkgs))
	}
	r := rule{pkg: pkgs[0], planned: strings.HasPrefix(cells[1], plannedMark)}
	if cells[1] == "" {
		return rule{}, fmt.Errorf("package %s: column %q is empty", r.pkg, rulesHeader[1])
	}
	if r.allow, err = patterns(cells[2]); err != nil {
		return rule{}, fmt.Errorf("package %s: column %q: %w", r.pkg, rulesHeader[2], err)
	}
	if r.deny, err = patterns(cells[3]); err != nil {
		return rule{}, fmt.Errorf("package %s: column %q: %w", r.pkg, rulesHeader[3], err)
	}
	for _, p := range r.allow {
		if strings.Contains(strings.SplitN(p, "/", 2)[0], ".") {
			return rule{}, fmt.Errorf("package %s: column %q: %q is not a path inside this module", r.pkg, rulesHeader[2], p)
		}
	}
	switch cells[4] {
	case "yes":
		r.readsEnv = true
	case "no":
	default:
		return rule{}, fmt.Errorf("package %s: column %q is %q, want yes or no", r.pkg, rulesHeader[4], cells[4])
	}
	return r, nil
}

// patterns parses a cell of backquoted patterns separated by commas, or
// "—" (or an empty cell) for none.
func patterns(cell string) ([]string, error) {
	if cell == "" || cell == "—" {
		return nil, nil
	}
	var out []string
	rest := cell
	for {
		rest = strings.TrimSpace(rest)
		if !strings.HasPrefix(rest, "`") {
			return nil, fmt.Errorf("%q: want backquoted patterns separated by commas", cell)
		}
		end := strings.IndexByte(rest[1:], '`')
		if end < 0 {
			return nil, fmt.Errorf("%q: unterminated backquote", cell)
		}
		p := rest[1 : 1+end]
		if err := checkPattern(p); err != nil {
			return nil, err
		}
		out = append(out, p)
		rest = strings.TrimSpace(rest[end+2:])
		if rest == "" {
			return out, nil
		}
		if rest[0] != ',' {
			return nil, fmt.Errorf("%q: want a comma after `%s`", cell, p)
		}
		rest = rest[1:]
	}
}

// checkPattern accepts an import path, optionally ending in "/...".
func checkPattern(p string) error {
	base := strings.TrimSuffix(p, "/...")
	if base == "" || base == "." || strings.HasPrefix(base, "/") || strings.HasSuffix(base, "/") ||
		strings.Contains(base, "//") || strings.ContainsAny(base, " \t\\*`") || strings.Contains(base, "...") {
		return fmt.Errorf("%q is not an import path pattern", p)
	}
	for _, seg := range strings.Split(base, "/") {
		if seg == "." || seg == ".." {
			return fmt.Errorf("%q is not an import path pattern", p)
		}
	}
	return nil
}

// matches reports whether path is matched by pattern: equal to it, or, for
// "a/...", equal to a or below it.
func matches(pattern, path string) bool {
	if base, ok := strings.CutSuffix(pattern, "/..."); ok {
		return path == base || strings.HasPrefix(path, base+"/")
	}
	return path == pattern
}

func matchesAny(patterns []string, path string) bool {
	for _, p := range patterns {
		if matches(p, path) {
			return true
		}
	}
	return false
}

// ruleFor returns the most specific rule for the package at path: an exact
// row wins over "..." rows, and a longer "..." prefix over a shorter one.
func ruleFor(rules []rule, path string) (rule, bool) {
	best, bestLen, found := rule{}, -1, false
	for _, r := range rules {
		if !matches(r.pkg, path) {
			continue
		}
		n := len(r.pkg) // exact rows: longer than any "..." row of a prefix
		if strings.HasSuffix(r.pkg, "/...") {
			n = len(r.pkg) - len("/...")
		} else {
			n += len("/...")
		}
		if n > bestLen {
			best, bestLen, found = r, n, true
		}
	}
	return best, found
}
