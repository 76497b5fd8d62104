package store

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
)

func TestOpenReadOnlyNeverCreates(t *testing.T) {
	path := filepath.Join(t.TempDir(), "missing", "bridge.db")
	if _, err := OpenReadOnly(t.Context(), path); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("err = %v, want fs.ErrNotExist", err)
	}
	if _, err := os.Stat(filepath.Dir(path)); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("OpenReadOnly created %s", filepath.Dir(path))
	}
}

// TestOpenReadOnlyReadsAndRefusesWrites reads what a writer committed,
// both while the writer has the database open (a running serve) and after
// it closed, and refuses every write.
func testOpenReadOnlyReadsAndRefusesWrites(t *testing.T, b backend) {
	path := b.database(t)
	w, err := Open(t.Context(), path)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.AddRoute(t.Context(), &Route{InboxID: 3, DifyKey: "app-x", Mode: ModeAuto, Enabled: true}); err != nil {
		t.Fatal(err)
	}
	read := func(when string) {
		t.Helper()
		ro, err := OpenReadOnly(t.Context(), path)
		if err != nil {
			t.Fatalf("%s: %v", when, err)
		}
		defer ro.Close()
		rs, err := ro.Routes(t.Context())
		if err != nil || len(rs) != 1 || rs[0].InboxID != 3 {
			t.Errorf("%s: routes %+v, %v", when, rs, err)
		}
		if err := ro.SetRouteEnabled(t.Context(), rs[0].ID, false); !errors.Is(err, ErrReadOnly) {
			t.Errorf("%s: write err = %v, want ErrReadOnly", when, err)
		}
	}
	read("writer open")
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	read("writer closed")
	ro, err := Open(t.Context(), path)
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	if r, err := ro.Route(t.Context(), 1); err != nil || !r.Enabled {
		t.Errorf("a refused write changed the route: %+v, %v", r, err)
	}
}

func TestOpenReadOnlyNotADatabase(t *testing.T) {
	path := filepath.Join(t.TempDir(), "notes.txt")
	if err := os.WriteFile(path, []byte("hello, this is not sqlite at all, just some text of decent length"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := OpenReadOnly(t.Context(), path); err == nil {
		t.Fatal("opened a text file as a database")
	}
}
