"""What all dataset layouts share: finding which images show each class, large enough to be used."""
import numpy as np


class Dataset:
    name = "dataset"
    class_names = {}
    ids = []

    def image(self, image_id):
        raise NotImplementedError

    def labels(self, image_id):
        raise NotImplementedError

    def version(self):
        """A string that changes when the data set's files do (used to key cached features)."""
        return ""

    def classes_in(self, labels):
        """{class id: share of the image} for one label map."""
        values, counts = np.unique(labels, return_counts=True)
        return {int(v): c / labels.size for v, c in zip(values, counts) if v in self.class_names}

    def binarize(self, labels, class_id):
        """uint8 map: 1 = the class, 0 = anything else, 255 = not scored."""
        return np.where(labels == 255, 255, labels == class_id).astype(np.uint8)

    def class_shares(self, min_share=0.005):
        """{class id: image ids where the class covers at least min_share of the image} (computed once)."""
        if getattr(self, "_shares", None) is None:
            self._shares = [(image_id, self.classes_in(self.labels(image_id))) for image_id in self.ids]
        found = {c: [] for c in self.class_names}
        for image_id, shares in self._shares:
            for c, share in shares.items():
                if share >= min_share:
                    found[c].append(image_id)
        return found
