package soak

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"strings"
)

// chunkLen is the length of the pieces of a secret the scanner looks for.
// Every secret segment is cut into consecutive chunks of chunkLen bytes, so
// any leaked run of at least 2*chunkLen-1 bytes of it contains one whole
// chunk; a chunk of 24 random base64url characters (144 bits) never occurs
// by chance.
const chunkLen = 24

// secretScanner finds secrets, or long enough pieces of them, in text.
type secretScanner struct {
	chunks map[[chunkLen]byte]int // chunk -> index into names
	names  []string               // what each secret is, e.g. "access token #12"
}

func newSecretScanner() *secretScanner {
	return &secretScanner{chunks: map[[chunkLen]byte]int{}}
}

// add registers a secret under a name that says what it is (never the
// secret). A JWT is split at its dots and each segment of at least
// chunkLen bytes is indexed; the header segment, the same for every token
// of one signing key, is skipped. Any other string is indexed whole. It
// reports how many chunks were added.
func (s *secretScanner) add(name, secret string) int {
	id := len(s.names)
	s.names = append(s.names, name)
	segments := []string{secret}
	if parts := strings.Split(secret, "."); len(parts) == 3 {
		segments = parts[1:] // payload and signature
	}
	n := 0
	for _, seg := range segments {
		for i := 0; i+chunkLen <= len(seg); i += chunkLen {
			var k [chunkLen]byte
			copy(k[:], seg[i:i+chunkLen])
			s.chunks[k] = id
			n++
		}
	}
	return n
}

// ScanHit is one secret found in one file: its name, never the secret.
type ScanHit struct {
	File, Secret string
	Offset       int64
}

// scanFile reads path and reports every secret found (one hit per secret
// and file) and the bytes scanned. A missing file is an error: the soak
// only scans files it wrote.
func (s *secretScanner) scanFile(path string) ([]ScanHit, int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, 0, err
	}
	defer f.Close()
	return s.scan(path, f)
}

// scan reads r in blocks that overlap by chunkLen-1 bytes, so a chunk
// across a block boundary is still seen.
func (s *secretScanner) scan(name string, r io.Reader) ([]ScanHit, int64, error) {
	br := bufio.NewReaderSize(r, 1<<20)
	buf := make([]byte, 0, 1<<20+chunkLen)
	var hits []ScanHit
	seen := map[int]bool{}
	var base, total int64
	for {
		n, err := io.ReadFull(br, buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		total += int64(n)
		for i := 0; i+chunkLen <= len(buf); i++ {
			var k [chunkLen]byte
			copy(k[:], buf[i:i+chunkLen])
			if id, ok := s.chunks[k]; ok && !seen[id] {
				seen[id] = true
				hits = append(hits, ScanHit{File: name, Secret: s.names[id], Offset: base + int64(i)})
			}
		}
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			return hits, total, nil
		}
		if err != nil {
			return hits, total, fmt.Errorf("scanning %s: %w", name, err)
		}
		keep := chunkLen - 1
		if len(buf) < keep {
			keep = len(buf)
		}
		base += int64(len(buf) - keep)
		copy(buf, buf[len(buf)-keep:])
		buf = buf[:keep]
	}
}
