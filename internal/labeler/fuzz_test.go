package labeler

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/habring/habring/contract"
)

// FuzzCensus throws arbitrary bodies at the census decoder and the role decision, as a
// broken or hostile gateway could. Neither may panic; a census that decodes yields a role
// the label may hold, or the one error that asks for --service-group.
func FuzzCensus(f *testing.F) {
	files, err := filepath.Glob("testdata/*.json")
	if err != nil {
		f.Fatal(err)
	}
	for _, file := range files {
		b, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b, "")
		f.Add(b, "redis.default")
	}
	f.Add([]byte(`{"local_member_id":"a","census_groups":{"g":{"election_status":"ElectionFinished","leader_id":null,"population":{"a":{}}}}}`), "")
	f.Add([]byte(`{"local_member_id":"a","census_groups":{"g":null,"h":{"population":{"a":null}}}}`), "")
	f.Fuzz(func(t *testing.T, body []byte, group string) {
		c, err := DecodeCensus(body)
		if err != nil {
			if c != nil {
				t.Fatalf("a census and an error: %v", err)
			}
			return
		}
		role, _, err := Decide(c, group)
		switch {
		case err != nil:
			if !errors.Is(err, ErrAmbiguousGroup) {
				t.Fatalf("unexpected error %v", err)
			}
		case role != contract.RoleLeader && role != contract.RoleFollower && role != contract.RoleNone:
			t.Fatalf("role %q", role)
		}
	})
}
