package docs

import (
	"bytes"
	"io/fs"
	"os"
	"regexp"
	"strings"
	"testing"
)

// privateNotes matches citations of material that is not part of the
// repository: the planning notes the project was specified in. A reader of
// the repository cannot follow them, so every file must explain itself, or
// point to docs/ or to an upstream URL. The words are assembled here so
// that this file does not match itself.
var privateNotes = regexp.MustCompile(strings.Join([]string{
	`\b` + "SP" + `EC\b`,               // the specification, by name or section
	regexp.QuoteMeta("../" + "shared"), // the directory the notes live in
	regexp.QuoteMeta("shared" + "/reference"),
	regexp.QuoteMeta("imds-" + "protocol.md"), // the notes' protocol research (ours is docs/imds.md)
	regexp.QuoteMeta("peers" + ".md"),
	regexp.QuoteMeta("style-by-" + "example"),
	regexp.QuoteMeta("test-" + "environment.md"),
}, "|"))

// skippedDirs are not part of the repository's content: version control,
// installed packages and build output (.gitignore).
var skippedDirs = map[string]bool{".git": true, "node_modules": true, "bin": true, "out": true}

// TestNoCitationsOfPrivateNotes walks the repository and fails for every
// line of a text file that cites the planning notes.
func TestNoCitationsOfPrivateNotes(t *testing.T) {
	files := 0
	root := os.DirFS("..")
	err := fs.WalkDir(root, ".", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if skippedDirs[d.Name()] {
				return fs.SkipDir
			}
			return nil
		}
		if !d.Type().IsRegular() {
			return nil
		}
		b, err := fs.ReadFile(root, path)
		if err != nil {
			return err
		}
		if bytes.IndexByte(b[:min(len(b), 8000)], 0) >= 0 {
			return nil // binary
		}
		files++
		for i, line := range strings.Split(string(b), "\n") {
			if m := privateNotes.FindString(line); m != "" {
				t.Errorf("%s:%d cites %q, which is not in the repository: say it here, or point to docs/ or an upstream source", path, i+1, m)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if files < 100 {
		t.Fatalf("read only %d text files; is the test running in docs/?", files)
	}
}

// TestPrivateNotesPattern shows what the pattern catches and what it lets
// through.
func TestPrivateNotesPattern(t *testing.T) {
	for line, want := range map[string]bool{
		"as " + "SP" + "EC §3.2 says":                     true,
		"see ../" + "shared/" + "SP" + "EC.md":            true,
		"reference/" + "imds-" + "protocol.md, section 2": true,
		"in peers" + ".md":                                true,
		"style-by-" + "example.md":                        true,
		"test-" + "environment.md has the commands":       true,
		"see docs/imds.md#errors":                         false,
		"[imds.md](imds.md#query)":                        false,
		"spec.Containers and the pod spec":                false,
		"the IMDS REST specification":                     false,
		"INSPECT the reply":                               false,
	} {
		if got := privateNotes.MatchString(line); got != want {
			t.Errorf("%q: match = %v, want %v", line, got, want)
		}
	}
}
