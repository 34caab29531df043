package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"

	"github.com/trainyard/trainyard"
)

// body is a JSON object decoded field by field, so that every bad field is named in one answer.
// A field whose value is null counts as absent.
type body struct {
	raw map[string]json.RawMessage
	p   trainyard.Problems
}

// parseBody decodes b as one JSON object.
func parseBody(b []byte) (*body, error) {
	f := &body{raw: map[string]json.RawMessage{}}
	if len(bytes.TrimSpace(b)) == 0 {
		return f, nil
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(&f.raw); err != nil || f.raw == nil {
		return nil, trainyard.FieldError("body", "must be a JSON object")
	}
	if dec.More() {
		return nil, trainyard.FieldError("body", "must be a single JSON object")
	}
	for k, v := range f.raw {
		if string(v) == "null" {
			delete(f.raw, k)
		}
	}
	return f, nil
}

// has reports whether the field is present and not null.
func (f *body) has(name string) bool { _, ok := f.raw[name]; return ok }

// only adds a problem for every field not in allowed.
func (f *body) only(allowed ...string) {
	for k := range f.raw {
		if !slices.Contains(allowed, k) {
			f.p.Add(k, "unknown field")
		}
	}
}

func (f *body) str(name string) string {
	v, ok := f.raw[name]
	if !ok {
		return ""
	}
	var s string
	if err := json.Unmarshal(v, &s); err != nil {
		f.p.Add(name, "must be a string")
	} else if strings.ContainsRune(s, 0) {
		f.p.Add(name, "must not contain NUL characters")
		return ""
	}
	return s
}

// int64 reads an integer; a fraction, a string or a number out of range is a problem.
func (f *body) int64(name string) int64 {
	v, ok := f.raw[name]
	if !ok {
		return 0
	}
	n, err := parseInt(v)
	if err != nil {
		f.p.Add(name, "must be an integer")
	}
	return n
}

// parseInt reads a JSON number that is an integer; strings, even of digits, are not numbers.
func parseInt(v json.RawMessage) (int64, error) {
	v = bytes.TrimSpace(v)
	if len(v) == 0 || (v[0] != '-' && (v[0] < '0' || v[0] > '9')) {
		return 0, fmt.Errorf("not a number")
	}
	var num json.Number
	dec := json.NewDecoder(bytes.NewReader(v))
	dec.UseNumber()
	if err := dec.Decode(&num); err != nil {
		return 0, err
	}
	return strconv.ParseInt(num.String(), 10, 64)
}

func (f *body) int(name string) int {
	n := f.int64(name)
	if n > math.MaxInt32 || n < math.MinInt32 {
		f.p.Add(name, "is out of range")
		return 0
	}
	return int(n)
}

func (f *body) bool(name string) bool {
	v, ok := f.raw[name]
	if !ok {
		return false
	}
	var b bool
	if err := json.Unmarshal(v, &b); err != nil {
		f.p.Add(name, "must be true or false")
	}
	return b
}

// ints reads an array of integers.
func (f *body) ints(name string) []int64 {
	v, ok := f.raw[name]
	if !ok {
		return nil
	}
	var items []json.RawMessage
	if err := json.Unmarshal(v, &items); err != nil {
		f.p.Add(name, "must be an array of integers")
		return nil
	}
	out := make([]int64, 0, len(items))
	for i, it := range items {
		n, err := parseInt(it)
		if err != nil {
			f.p.Add(name, "item %d must be an integer", i)
			continue
		}
		out = append(out, n)
	}
	return out
}

// countOrPercent reads max_unavailable: an integer or a string such as "3" or "25%".
func (f *body) countOrPercent(name string) string {
	v, ok := f.raw[name]
	if !ok {
		return ""
	}
	if n, err := parseInt(v); err == nil {
		return strconv.FormatInt(n, 10)
	}
	var s string
	if err := json.Unmarshal(v, &s); err != nil {
		f.p.Add(name, "must be an integer or a percentage string such as \"25%%\"")
	}
	return strings.TrimSpace(s)
}

// decode reads a field into v with encoding/json, refusing unknown nested fields.
func (f *body) decode(name string, v any) {
	raw, ok := f.raw[name]
	if !ok {
		return
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		f.p.Add(name, "%s", describeJSONError(err))
	}
}

func describeJSONError(err error) string {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		if te.Field != "" {
			return fmt.Sprintf("%s must be of type %s", te.Field, te.Type)
		}
		return fmt.Sprintf("must be of type %s", te.Type)
	}
	msg := strings.TrimPrefix(err.Error(), "json: ")
	return msg
}

// decodeRules decodes security group rules, accepting ports as numbers or strings.
func decodeRules(raw json.RawMessage, field string, p *trainyard.Problems) []trainyard.SecurityRule {
	var items []map[string]json.RawMessage
	if err := json.Unmarshal(raw, &items); err != nil {
		p.Add(field, "must be an array of rule objects")
		return nil
	}
	out := make([]trainyard.SecurityRule, 0, len(items))
	for i, it := range items {
		at := fmt.Sprintf("%s[%d]", field, i)
		if field == "" {
			at = fmt.Sprintf("[%d]", i)
		}
		rb := &body{raw: map[string]json.RawMessage{}}
		for k, v := range it {
			if string(v) != "null" {
				rb.raw[k] = v
			}
		}
		rb.only("id", "rule_type", "protocol", "protocol_type", "network_type", "ports", "cidr_ip", "cidr_subnet", "description")
		r := trainyard.SecurityRule{
			RuleType: rb.str("rule_type"), Protocol: rb.str("protocol"), ProtocolType: rb.str("protocol_type"),
			NetworkType: rb.str("network_type"), CIDR: rb.str("cidr_ip"), CIDRSubnet: rb.str("cidr_subnet"),
			Description: rb.str("description"),
		}
		rb.int64("id")
		if v, ok := rb.raw["ports"]; ok {
			var ports []json.RawMessage
			if err := json.Unmarshal(v, &ports); err != nil {
				rb.p.Add("ports", "must be an array of ports or ranges")
			}
			for j, pv := range ports {
				if n, err := parseInt(pv); err == nil {
					r.Ports = append(r.Ports, strconv.FormatInt(n, 10))
					continue
				}
				var s string
				if err := json.Unmarshal(pv, &s); err != nil {
					rb.p.Add(fmt.Sprintf("ports[%d]", j), "must be a port number or a range string such as \"8000-8100\"")
					continue
				}
				r.Ports = append(r.Ports, s)
			}
		}
		if r.Ports == nil {
			r.Ports = []string{}
		}
		if err, ok := rb.p.Err().(*trainyard.Error); ok && err != nil {
			for k, msgs := range err.Fields {
				for _, m := range msgs {
					p.Add(at+"."+k, "%s", m)
				}
			}
		}
		out = append(out, r)
	}
	return out
}
