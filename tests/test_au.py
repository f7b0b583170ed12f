import pytest
import torch

from magicface_core import AU_NAMES, AUInputError, AUVector, emotion_preset


def test_from_dict_places_values_in_reference_order():
    au = AUVector.from_dict({"AU12": 3, "au6": 2, "26": -1.5})
    row = au.values[0]
    assert row[AU_NAMES.index("AU12")] == 3 and row[AU_NAMES.index("AU6")] == 2
    assert row[AU_NAMES.index("AU26")] == -1.5
    assert int((row != 0).sum()) == 3
    assert AU_NAMES == ("AU1", "AU2", "AU4", "AU5", "AU6", "AU9", "AU12", "AU15", "AU17", "AU20", "AU25", "AU26")


def test_parse_text_and_round_trip():
    au = AUVector.parse("AU12=3, AU6=2 AU4:-1")
    assert au.to_dicts(skip_zeros=True) == [{"AU4": -1.0, "AU6": 2.0, "AU12": 3.0}]
    assert AUVector.parse("").is_zero()


@pytest.mark.parametrize("bad", ["AU13=2", "AU12", "AU12=x", "AU12=1,AU12=2", "AU12=nan"])
def test_parse_rejects_bad_text(bad):
    with pytest.raises(AUInputError):
        AUVector.parse(bad)


@pytest.mark.parametrize("values", [[1.0] * 11, [[1.0] * 13], [float("inf")] + [0.0] * 11, torch.zeros(0, 12)])
def test_constructor_rejects_bad_shapes_and_values(values):
    with pytest.raises(AUInputError):
        AUVector(values)


def test_batch_arithmetic_and_broadcast():
    source = AUVector.from_dict({"AU12": 1})
    targets = AUVector.from_dicts([{"AU12": 4}, {"AU12": 2, "AU1": 1}])
    delta = targets - source
    assert len(delta) == 2
    assert delta.get("AU12").tolist() == [3.0, 1.0]
    assert delta[1].to_dicts(skip_zeros=True) == [{"AU1": 1.0, "AU12": 1.0}]
    assert (source * 2 + source).get("AU12").tolist() == [3.0]
    assert len(source.repeat_to(5)) == 5
    with pytest.raises(AUInputError):
        AUVector.cat([targets, targets]) + AUVector.cat([targets, targets, targets])


def test_vectors_are_immutable():
    au = AUVector.from_dict({"AU1": 1})
    au.values[0, 0] = 99
    assert au.get("AU1").item() == 1


def test_presets_match_the_paper():
    assert emotion_preset("happiness", 2).to_dicts(skip_zeros=True) == [{"AU6": 2.0, "AU12": 2.0}]
    assert emotion_preset("Sadness").to_dicts(skip_zeros=True) == [{"AU1": 1.0, "AU4": 1.0, "AU15": 1.0}]
    with pytest.raises(AUInputError):
        emotion_preset("boredom")


def test_table_names_every_au():
    text = AUVector.from_dicts([{"AU12": 3}, {"AU1": 1}]).table()
    for name in AU_NAMES:
        assert name in text
    assert "lip corner puller" in text and "3.00" in text
