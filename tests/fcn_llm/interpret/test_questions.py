"""Questions explained: attribute checks (unknown / not trained) and defaults per attribute kind."""

import pytest

from fcn_llm.interpret.questions import AttributeNotAllowedError, check_attribute, make_question


def test_unknown_attribute_names_the_allowed_ones():
    with pytest.raises(AttributeNotAllowedError, match=r"'adhdd' is not a known attribute; allowed attributes: .*adhd"):
        check_attribute("adhdd")


def test_attribute_the_model_was_not_trained_on_names_the_trained_ones():
    with pytest.raises(AttributeNotAllowedError, match=r"'age' is not an attribute this model was trained on; "
                                                       r"allowed attributes: adhd, sex\."):
        check_attribute("age", allowed=["adhd", "sex"])


def test_binary_judgment_explains_yes_against_no():
    q = make_question(check_attribute("adhd"))
    assert (q.choices, q.target_answer, q.num_graphs) == (("Yes", "No"), "Yes", 1)
    assert q.messages[0]["content"].startswith("<graph>\n") and "ADHD" in q.text


def test_binary_predictive_uses_the_registry_labels():
    q = make_question(check_attribute("adhd"), "predictive")
    assert q.choices == ("ADHD", "Control") and q.target == 0


def test_categorical_target_class():
    q = make_question(check_attribute("sex"), "predictive", target_class="Female")
    assert q.choices == ("Female", "Male") and q.target_answer == "Female"
    judged = make_question(check_attribute("sex"), target_class="Male")
    assert "male?" in judged.text and judged.choices == ("Yes", "No")
    with pytest.raises(ValueError, match="classes"):
        make_question(check_attribute("sex"), target_class="Other")


def test_continuous_judgment_threshold_and_no_predictive_choices():
    q = make_question(check_attribute("age"), threshold=30)
    assert "30" in q.text
    with pytest.raises(ValueError, match="continuous"):
        make_question(check_attribute("age"), "predictive")


def test_comparative_takes_two_graphs():
    q = make_question(check_attribute("adhd"), "comparative")
    assert q.num_graphs == 2 and q.choices == ("First", "Second")
    assert q.messages[0]["content"].count("<graph>") == 2
    with pytest.raises(ValueError, match="no comparative questions"):
        make_question(check_attribute("sex"), "comparative")


def test_categorical_judgment_knows_its_class_whatever_the_template():
    from datasets_scripts.attributes import load_registry
    from fcn_llm.interpret.questions import make_question

    attr = load_registry()["eye_status"]  # templates put "{phrase}" mid-sentence, not before "?"
    for template in range(len(attr.templates["judgment"])):
        question = make_question(attr, "judgment", target_class="Closed", template=template)
        assert question.target_class == "Closed" and "closed" in question.text
