//! `docs/conformance.md` stays true: every normative statement of MQTT 3.1.1 and 5.0
//! (sections 1-4) has a test citing it or a note saying why not, and the table is what
//! `scripts/conformance.py` makes from the tests as they are.

mod support;

#[test]
fn every_statement_has_a_test_or_a_note_and_the_table_is_current() {
    support::script_check("conformance.py", &["--check"]);
}
