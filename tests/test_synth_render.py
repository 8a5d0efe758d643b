"""The generator's rendering primitives (eiclip_core.synth.render): pure functions of their inputs."""
import numpy as np
import pytest

from eiclip_core.synth import render
from eiclip_core.synth.world import MATERIALS, SUBCATEGORIES


def _body(shape, size=64, width=1.0):
    return render.draw_shape(render.SILHOUETTES[shape], size, width)[0]


def test_every_subcategory_has_a_silhouette_and_only_those():
    assert set(render.SILHOUETTES) == {sub.shape for sub in SUBCATEGORIES}


def test_silhouettes_are_non_empty_and_distinct():
    """Each table entry draws a garment, and no two draw the same picture (outline plus details: a tee
    and a blouse share the outline and differ by the neckline)."""
    looks = {}
    for shape, primitives in render.SILHOUETTES.items():
        body, detail = (mask > 0.5 for mask in render.draw_shape(primitives, 64))
        assert 0.1 < body.mean() < 0.5, shape  # a garment on a background
        looks[shape] = body + 2 * detail
    shapes = sorted(looks)
    for i, a in enumerate(shapes):
        for b in shapes[i + 1:]:
            assert (looks[a] != looks[b]).sum() > 20, (a, b)  # more pixels than an anti-aliased edge


def test_details_are_drawn_on_their_own_layer():
    body, detail = render.draw_shape(render.SILHOUETTES["overcoat"], 64)
    assert detail.sum() > 0 and body.dtype == detail.dtype == np.float32
    assert 0.0 <= body.min() and body.max() <= 1.0
    no_detail = render.draw_shape([p for p in render.SILHOUETTES["overcoat"] if p.layer == render.BODY], 64)
    np.testing.assert_array_equal(no_detail[0], body)
    assert no_detail[1].sum() == 0


def test_width_stretches_horizontally_about_the_centre():
    narrow, wide = _body("trousers", width=0.72) > 0.5, _body("trousers", width=1.28) > 0.5
    columns = lambda m: np.flatnonzero(m.any(0))
    rows = lambda m: np.flatnonzero(m.any(1))
    np.testing.assert_array_equal(rows(narrow), rows(wide))  # same height
    assert len(columns(wide)) > 1.5 * len(columns(narrow))
    for m in (narrow, wide):  # centred
        assert abs((columns(m)[0] + columns(m)[-1]) / 2 - 31.5) <= 1


def test_a_new_shape_is_data():
    """Another generator draws its own table entries with the same function."""
    icon = (render.Ellipse(((0.2, 0.2), (0.8, 0.8))), render.Rect(0.45, 0.1, 0.55, 0.9, render.DETAIL))
    body, detail = render.draw_shape(icon, 32)
    assert body[16, 16] == 1.0 and body[1, 1] == 0.0
    assert detail[4:28, 15:17].min() > 0.9 and detail[:, :10].max() == 0


def test_textures_are_visible_distinct_and_seeded():
    textures = render.material_textures(48, np.random.default_rng(3))
    assert set(textures) == set(MATERIALS)
    for material, texture in textures.items():
        assert texture.shape == (48, 48) and texture.dtype == np.float32
        assert 0.7 < texture.mean() < 1.1 and texture.std() > 0.03, material
    names = sorted(textures)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            assert np.abs(textures[a] - textures[b]).mean() > 0.03, (a, b)
    again = render.material_textures(48, np.random.default_rng(3))
    assert all(np.array_equal(textures[m], again[m]) for m in MATERIALS)


def test_season_colour_lighter_in_spring_and_warmer_later():
    red = (196, 32, 44)
    colour = lambda season: render.season_colour(red, season, np.random.default_rng(0))
    assert colour("SS2016").sum() > colour("FW2016").sum() + 100
    late, early = colour("FW2018"), colour("FW2014")
    assert late[0] > early[0] and late[2] < early[2]


def test_paint_fills_the_shape_and_leaves_white_around_it():
    masks = render.draw_shape(render.SILHOUETTES["skirt"], 32)
    texture = np.full((32, 32), 0.5, np.float32)
    image = render.paint(masks, np.array([200.0, 100.0, 0.0]), texture)
    body, detail = masks
    assert image.shape == (32, 32, 3)
    np.testing.assert_array_equal(image[body == 0], 255.0)
    inside = (body == 1) & (detail == 0)
    np.testing.assert_allclose(image[inside], [[100.0, 50.0, 0.0]] * int(inside.sum()))


def test_draw_glyph_marks_the_corner_only_and_keeps_the_input():
    image = np.full((64, 64, 3), 250.0)
    glyph = np.array([[1, 0, 1], [0, 1, 0], [1, 1, 1]], bool)
    marked = render.draw_glyph(image, glyph, (200, 20, 20))
    assert marked.dtype == np.uint8 and (image == 250.0).all()
    corner = marked[48:60, 48:60]  # cells of 4 pixels, one cell from the edges
    np.testing.assert_array_equal((corner[..., 1] == 20), np.kron(glyph, np.ones((4, 4), bool)))
    outside = np.ones((64, 64), bool)
    outside[48:60, 48:60] = False
    assert (marked[outside] == 250).all()


def test_product_views_first_is_the_image_others_differ():
    image = render.draw_glyph(render.paint(render.draw_shape(render.SILHOUETTES["backpack"], 64),
                                           np.array([40.0, 140.0, 62.0]), np.ones((64, 64), np.float32)),
                              np.eye(3, dtype=bool), (20, 20, 20))
    before = image.copy()
    views = render.product_views(image, 6, np.random.default_rng(1))
    assert views.shape == (6, 64, 64, 3) and views.dtype == np.uint8
    np.testing.assert_array_equal(views[0], image)
    np.testing.assert_array_equal(image, before)
    assert all(not np.array_equal(views[0], v) for v in views[1:])
    np.testing.assert_array_equal(views, render.product_views(image, 6, np.random.default_rng(1)))


@pytest.mark.parametrize("shape", sorted(render.SILHOUETTES))
def test_shapes_are_pure(shape):
    first, again = render.draw_shape(render.SILHOUETTES[shape], 24, 1.1), render.draw_shape(
        render.SILHOUETTES[shape], 24, 1.1)
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
